"""Which calls on the bridge's request path give up the GIL.

    python -m bench.gilprobe

A call that releases the GIL makes its thread win it back, and in the bridge 32 waitress threads,
gRPC's threads and the I/O thread want it too: every such call costs a hand-off (a futex wait, a
context switch) on top of its own time. cryptography's `verify` was one (~20 µs of RSA); checking
signatures in a way that holds the GIL took retries signed anew from 1,870 to 2,141 req/s in
interleaved A/B runs (docs/benchmark.md).

How it tells: the switch interval is set to 0.1 s and a second thread counts while it holds the
GIL. A call that releases the GIL lets it count (and then waits ~0.1 s for the forced switch back);
one that holds it does not. No timing decides the verdict. Only this process runs; nothing is sent
anywhere. Exit status 1 when a call of the bridge's (not the comparison) releases the GIL.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from paynotify_bridge.ack_cache import AckCache
from paynotify_bridge.app import new_request_id
from paynotify_bridge.parse import parse_notification
from paynotify_bridge.signature import (
    parse_signature_header,
    sign,
    signed_content,
    verify_rsa256,
)

__all__ = ["gil_catches", "main"]

INTERVAL = 0.1
CALLS = 40
# A release lets the spinner in only when it wakes before the call is over: 2 calls in 5 for a
# 20 µs RSA step, 1 in 20 to 40 for a getrandom system call. A call that holds the GIL lets it in
# only if the process stalls for the whole switch interval (the calls take milliseconds in all).
CAUGHT_AT_LEAST = 1


def gil_catches(call: Callable[[], object], calls: int = CALLS) -> tuple[int, float]:
    """(in how many of `calls` calls the spinning thread got the GIL, seconds per call).

    The spinner counts while it holds the GIL. A call that holds the GIL throughout leaves the
    count as it found it; one that releases it lets the spinner run whenever the spinner wakes in
    time. Any such call means `call` gives the GIL up. The time per call is shown, not judged.
    """
    call()  # warm: imports, caches
    previous = sys.getswitchinterval()
    stop = threading.Event()
    count = [0]

    def spin() -> None:
        while not stop.is_set():
            count[0] += 1

    spinner = threading.Thread(target=spin, daemon=True)
    sys.setswitchinterval(INTERVAL)
    ran = 0
    try:
        spinner.start()
        time.sleep(3 * INTERVAL)  # the spinner holds the GIL between our switches
        started = time.perf_counter()
        for _ in range(calls):
            before = count[0]
            call()
            ran += count[0] != before
        per_call = (time.perf_counter() - started) / calls
    finally:
        stop.set()
        spinner.join()
        sys.setswitchinterval(previous)
    return ran, per_call


def _sample_body() -> bytes:
    from paynotify_bridge.simulator import builtin_samples

    return next(iter(builtin_samples().values()))


def main() -> int:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key()
    body = _sample_body()
    header = parse_signature_header(sign(key, "POST", "/alipay/notify", "C", "T", body, "1"))
    content = signed_content("POST", "/alipay/notify", "C", "T", body)
    cache = AckCache(1000, 1800.0)
    cache_key = cache.key("C", body)
    cache.add(cache_key, cache.fingerprint(cache_key, "POST", "/p", "T", "S"), 0)
    calls: dict[str, Callable[[], object]] = {
        "verify_rsa256 (the bridge's check)": lambda: verify_rsa256(
            public, header.signature, content
        ),
        "cryptography verify (for comparison)": lambda: public.verify(
            header.signature, content, padding.PKCS1v15(), hashes.SHA256()
        ),
        "sha256 of the body": lambda: hashlib.sha256(content).digest(),
        "AckCache.key + fingerprint": lambda: cache.fingerprint(
            cache.key("C", body), "POST", "/p", "T", "S"
        ),
        "AckCache.verified_before": lambda: cache.verified_before(cache_key, b"x" * 16, 0),
        "parse_notification": lambda: parse_notification(body),
        "new_request_id": new_request_id,
        "os.urandom(16) (for comparison)": lambda: os.urandom(16),
        "json.loads of the body": lambda: json.loads(body),
        "os.getpid": os.getpid,
    }
    print(f"switch interval {INTERVAL} s, a spinning thread beside each call, {CALLS} calls each")
    released_any = False
    for name, call in calls.items():
        caught, per_call = gil_catches(call)
        released = caught >= CAUGHT_AT_LEAST
        released_any |= released and "comparison" not in name
        verdict = f"RELEASES the GIL ({caught} of {CALLS} calls)" if released else "holds the GIL"
        print(f"  {name:40s} {per_call * 1e3:9.3f} ms a call   {verdict}")
    return 1 if released_any else 0


if __name__ == "__main__":
    sys.exit(main())
