"""The acknowledged-body cache: the unit (bounds, ageing, keys) and the bridge with a real hub
(a retry of an acknowledged body is answered without the hub; nothing else is)."""

from __future__ import annotations

import gc
import io
import os
import threading
import time
import tracemalloc
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import falcon
import pytest

from paynotify_bridge import app as app_module
from paynotify_bridge.ack_cache import NO_FINGERPRINT, AckCache
from paynotify_bridge.app import RequestVerifier, create_app
from paynotify_bridge.cli import build_verifier
from paynotify_bridge.config import BridgeConfig, ConfigError
from paynotify_bridge.errors import SignatureRejected
from paynotify_bridge.publisher import HubPublisher
from paynotify_bridge.signature import VerifiedRequest
from tests.bridge.conftest import (
    CLIENT_ID,
    SOON,
    SUCCESS_BODY,
    BridgeFactory,
    Keys,
    bridge_config,
    sample_body,
    signed_headers,
    store_counts,
    subscribed,
)
from tests.hubkit import ThreadedHub, free_port, hub_process

SAMPLE = sample_body("payment_result_success")
FP = b"f" * 16  # a request fingerprint, where the test does not look at it
# The Request-Time of a first send, repeated byte for byte.
FIRST_TIME = "2026-12-02T10:00:00+08:00"


def k(name: object) -> bytes:
    """A 16-byte key, as AckCache.key makes them."""
    return AckCache.key(CLIENT_ID, str(name).encode())


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the unit ------------------------------------------------------------------------------------


def test_keys_depend_on_every_body_byte_and_the_client_id() -> None:
    key = AckCache.key(CLIENT_ID, SAMPLE)
    assert AckCache.key("\u00e9", b"") != AckCache.key("\udcc3\udca9", b"")
    assert key == AckCache.key(CLIENT_ID, bytes(SAMPLE))
    assert len(key) == 16
    assert key != AckCache.key(CLIENT_ID, SAMPLE + b" ")
    assert key != AckCache.key(CLIENT_ID, SAMPLE.replace(b"S", b"F", 1))
    assert key != AckCache.key("OTHER_CLIENT", SAMPLE)
    # The client id is length-prefixed: moving a byte between it and the body changes the key.
    assert AckCache.key("ab", b"c") != AckCache.key("a", b"bc")


def test_fingerprints_depend_on_every_signed_field() -> None:
    key = AckCache.key(CLIENT_ID, SAMPLE)
    fields = ("POST", "/alipay/notify", "2026-12-02T10:00:00+08:00", "algorithm=RSA256,signature=x")
    fingerprint = AckCache.fingerprint(key, *fields)
    assert fingerprint == AckCache.fingerprint(bytes(key), *fields)
    assert len(fingerprint) == 16 and fingerprint != key
    assert fingerprint != AckCache.fingerprint(AckCache.key(CLIENT_ID, SAMPLE + b" "), *fields)
    for i in range(len(fields)):
        changed = list(fields)
        changed[i] += "x"
        assert AckCache.fingerprint(key, *changed) != fingerprint, fields[i]
    # Path text decoded with surrogateescape (a byte that is not UTF-8) is its own field value.
    escaped = AckCache.fingerprint(key, "POST", "/a\udcff", *fields[2:])
    assert escaped != AckCache.fingerprint(key, "POST", "/a\xff", *fields[2:])
    # The fields are delimited: moving a character from one field to the next shows.
    moved = ("POST", "/alipay/notify2", "026-12-02T10:00:00+08:00", fields[3])
    assert AckCache.fingerprint(key, *moved) != fingerprint


def test_only_the_fingerprint_added_with_a_key_counts_as_verified_before() -> None:
    cache = AckCache(capacity=100, ttl=60, clock=FakeClock())
    assert not cache.verified_before(k("k"), FP, 0)
    cache.add(k("k"), FP, 0)
    assert cache.verified_before(k("k"), FP, 0)
    assert not cache.verified_before(k("k"), b"g" * 16, 0)  # the body known, not this request
    assert cache.contains(k("k"), 0)
    assert not cache.verified_before(k("other"), FP, 0)
    assert not cache.verified_before(k("k"), FP, 1)  # a hub restarted since


def test_every_entry_of_a_full_generation_is_found_with_its_own_fingerprint() -> None:
    cache = AckCache(capacity=2000, ttl=3600, clock=FakeClock())  # 1000 a generation
    entries = {k(i): AckCache.fingerprint(k(i), "POST", "/p", str(i), "s") for i in range(999)}
    for key, fingerprint in entries.items():
        cache.add(key, fingerprint, 0)
    assert len(cache) == 999  # not rotated yet: every probe chain is in one table
    for key, fingerprint in entries.items():
        assert cache.verified_before(key, fingerprint, 0)
    assert not any(cache.contains(k(i), 0) for i in range(1000, 2000))
    first = k(0)
    cache.add(first, FP, 0)  # the same body again, carried by another request: the newer one
    assert len(cache) == 999
    assert cache.verified_before(first, FP, 0) and not cache.verified_before(
        first, entries[first], 0
    )


def test_what_cannot_be_a_verified_request_never_is() -> None:
    cache = AckCache(capacity=100, ttl=3600, clock=FakeClock())
    cache.add(k("k"), NO_FINGERPRINT, 0)  # answered without verification (insecure mode)
    assert cache.contains(k("k"), 0)
    assert not cache.verified_before(k("k"), NO_FINGERPRINT, 0)
    zeros = bytes(16)  # marks a free slot; BLAKE2b gives it with probability 2**-128
    cache.add(zeros, FP, 0)
    assert not cache.contains(zeros, 0) and not cache.verified_before(zeros, FP, 0)
    with pytest.raises(ValueError, match="16-byte"):
        cache.add(b"short", FP, 0)
    with pytest.raises(ValueError, match="16-byte"):
        cache.add(k("k"), b"short", 0)


def test_no_python_object_is_kept_per_entry() -> None:
    tracemalloc.start()
    try:
        cache = AckCache(capacity=20_000, ttl=3600)
        for i in range(100_000):
            cache.add(k(i), FP, 0)
        size, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The tables are anonymous mappings, which tracemalloc does not see: only small change.
    assert size < 64 * 1024, size


def _resident_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux's /proc")
def test_resident_memory_stays_at_two_generations_however_many_rotations() -> None:
    """Each generation is 3.2 MB here; they rotate every 50 000 answers, added from different
    threads as waitress's workers do. A dropped generation must go back to the system."""
    cache = AckCache(capacity=100_000, ttl=3600)

    def answer(first: int) -> None:
        for i in range(first, first + 50_000):
            cache.add(k(i), FP, 0)

    samples = []
    for round_ in range(8):
        worker = threading.Thread(target=answer, args=(round_ * 50_000,))
        worker.start()
        worker.join()
        samples.append(_resident_mib())
    # From the second rotation on both generations are resident; six more rotations add nothing.
    assert max(samples[2:]) - samples[1] < 1.5, samples


def test_a_fingerprint_is_forgotten_with_its_key() -> None:
    clock = FakeClock()
    cache = AckCache(capacity=100, ttl=60, clock=clock)
    cache.add(k("k"), FP, 0)
    clock.now += 61
    assert cache.verified_before(k("k"), FP, 0)  # in the previous generation
    clock.now += 60
    assert not cache.verified_before(k("k"), FP, 0)


def test_a_key_is_remembered_between_ttl_and_twice_ttl() -> None:
    clock = FakeClock()
    cache = AckCache(capacity=100, ttl=60, clock=clock)
    cache.add(k("early"), FP, 0)
    clock.now += 59
    cache.add(k("late"), FP, 0)
    clock.now += 2  # 61 s after the generation began: it becomes the previous one
    assert cache.contains(k("early"), 0) and cache.contains(k("late"), 0)
    clock.now += 58  # 119 s after "early", 60 after "late"
    assert cache.contains(k("early"), 0) and cache.contains(k("late"), 0)
    clock.now += 2  # the second rotation: both were added in the generation that ends now
    assert not cache.contains(k("early"), 0) and not cache.contains(k("late"), 0)
    assert len(cache) == 0


def test_a_quiet_spell_does_not_stretch_the_bound() -> None:
    clock = FakeClock()
    cache = AckCache(capacity=100, ttl=60, clock=clock)
    cache.add(k("k"), FP, 0)
    clock.now += 119  # the first look after the first generation ended, late
    assert cache.contains(k("k"), 0)
    clock.now += 6  # 125 s after it was added: more than twice the ttl
    assert not cache.contains(k("k"), 0)


def test_an_idle_cache_forgets_everything_after_twice_ttl() -> None:
    clock = FakeClock()
    cache = AckCache(capacity=100, ttl=60, clock=clock)
    cache.add(k("k"), FP, 0)
    clock.now += 121
    assert not cache.contains(k("k"), 0)


def test_entries_are_bounded_by_capacity() -> None:
    cache = AckCache(capacity=10, ttl=3600, clock=FakeClock())
    keys = [k(i) for i in range(1000)]
    for key in keys:
        cache.add(key, FP, 0)
        assert len(cache) <= 10
    assert cache.contains(keys[-1], 0)
    assert not cache.contains(keys[0], 0)
    # The newest capacity/2 keys at least are always remembered.
    assert all(cache.contains(key, 0) for key in keys[-5:])


def test_a_full_generation_starts_the_clock_again() -> None:
    clock = FakeClock()
    cache = AckCache(capacity=4, ttl=60, clock=clock)
    clock.now += 50
    cache.add(k("a"), FP, 0)
    cache.add(k("b"), FP, 0)  # full (2 keys): rotated at 50 s, so "a" and "b" are the previous ones
    clock.now += 59  # 109 s: the generation that began at 50 s has not ended
    assert cache.contains(k("a"), 0) and cache.contains(k("b"), 0)
    clock.now += 2  # 111 s: it ended; "a" and "b" were in the one before
    assert not cache.contains(k("a"), 0) and not cache.contains(k("b"), 0)


def test_a_newer_hub_generation_forgets_everything() -> None:
    cache = AckCache(capacity=100, ttl=3600, clock=FakeClock())
    cache.add(k("k"), FP, 0)
    assert cache.contains(k("k"), 0)
    assert not cache.contains(k("k"), 1)  # a hub restarted since: ask the hub again
    assert not cache.contains(k("k"), 0)


def test_a_body_answered_across_a_hub_restart_is_not_added() -> None:
    cache = AckCache(capacity=100, ttl=3600, clock=FakeClock())
    assert not cache.contains(k("other"), 3)  # another request saw generation 3
    cache.add(k("k"), FP, 2)  # this one asked the hub under generation 2
    assert not cache.contains(k("k"), 3)
    cache.add(k("k"), FP, 3)
    assert cache.contains(k("k"), 3)


def run_in_four_threads(work: Callable[[int], None]) -> None:
    """`work(start)` in four threads at once (starts 0, 10 000, ...); all must finish."""
    threads = [threading.Thread(target=work, args=(n * 10_000,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)


def test_concurrent_adds_and_lookups_keep_what_fits() -> None:
    cache = AckCache(capacity=100_000, ttl=3600)  # room for every key of every thread
    errors: list[str] = []

    def work(start: int) -> None:
        for i in range(start, start + 5000):
            key = k(i)
            cache.add(key, FP, 0)
            if not cache.contains(key, 0):
                errors.append(f"{i} missing right after add")

    run_in_four_threads(work)
    assert errors == []
    assert len(cache) == 20_000


def test_concurrent_adds_stay_within_capacity() -> None:
    cache = AckCache(capacity=1000, ttl=3600)
    sizes: list[int] = []

    def work(start: int) -> None:
        for i in range(start, start + 5000):
            cache.add(k(i), FP, 0)
            sizes.append(len(cache))

    run_in_four_threads(work)
    assert len(sizes) == 20_000
    assert max(sizes) <= 1000


@pytest.mark.parametrize(
    ("settings", "flag"),
    [
        ({"ack_cache_size": 1}, r"--ack-cache-size 1: must be 0 \(off\) or between"),
        ({"ack_cache_size": -5}, "--ack-cache-size"),
        ({"ack_cache_size": 10**9}, "--ack-cache-size"),
        ({"ack_cache_ttl": 0}, "--ack-cache-ttl"),
        ({"ack_cache_ttl": 60}, "--ack-cache-ttl 60: must be between 120"),
        ({"ack_cache_ttl": 10**6}, "--ack-cache-ttl"),
    ],
)
def test_unworkable_settings_name_the_flag(settings: dict[str, Any], flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        BridgeConfig(insecure_skip_verification=True, listen="127.0.0.1:0", **settings)


# -- the bridge with a real hub ----------------------------------------------------------------


def test_a_retry_of_an_acknowledged_body_is_answered_without_the_hub(
    make_bridge: BridgeFactory, hub: ThreadedHub
) -> None:
    bridge = make_bridge(hub.address)
    with subscribed(hub.address) as collector:
        first = bridge.notify(SAMPLE)
        assert (first.status, first.body) == (200, SUCCESS_BODY)
        collector.next()
        assert store_counts(hub) == (1, 1)
        # Alipay's retry: the same body, a new Request-Time and so a new signature.
        retry = bridge.notify(SAMPLE, request_time="2026-12-02T10:02:00+08:00")
        assert (retry.status, retry.body) == (200, SUCCESS_BODY)
        collector.assert_nothing(within=0.5)
    assert store_counts(hub) == (1, 1)  # the retry's receipt is not in the store
    assert bridge.metric("paynotify_bridge_ack_cache_hits_total") == 1
    assert bridge.metric("paynotify_bridge_requests_total", outcome="success") == 2
    assert bridge.metric("paynotify_bridge_publish_seconds_count") == 1


def test_a_byte_identical_retry_skips_verification_and_nothing_else_does(
    make_bridge: BridgeFactory, hub: ThreadedHub
) -> None:
    bridge = make_bridge(hub.address)
    with subscribed(hub.address):
        assert bridge.notify(SAMPLE, request_time=FIRST_TIME).status == 200
    same = bridge.notify(SAMPLE, request_time=FIRST_TIME)
    assert (same.status, same.body) == (200, SUCCESS_BODY)
    assert bridge.metric("paynotify_bridge_ack_cache_repeats_total") == 1
    # Any other Signature header with every other field the same is verified, and fails.
    for forged in (
        "algorithm=RSA256,keyVersion=1,signature=AAAA",
        "algorithm=RSA256,keyVersion=1,signature=BBBB",
    ):
        reply = bridge.notify(SAMPLE, request_time=FIRST_TIME, headers={"Signature": forged})
        assert reply.status == 401, (forged, reply.body)
    # The same Signature header with any other signed field changed is verified, and fails.
    signature = signed_headers(
        bridge.keys, SAMPLE, request_time=FIRST_TIME, path=bridge.config.path
    )
    stale = bridge.notify(
        SAMPLE,
        request_time="2026-12-02T10:02:00+08:00",
        headers={"Signature": signature["Signature"]},
    )
    assert stale.status == 401, stale.body
    path = bridge.config.path
    encoded = path[:-1] + f"%{ord(path[-1]):02X}"  # routed to the same resource, signed otherwise
    moved = bridge.notify(SAMPLE, request_time=FIRST_TIME, target=encoded, path=path)
    assert moved.status == 401, moved.body
    assert bridge.metric("paynotify_bridge_signature_failures_total", reason="bad_signature") == 4
    # A retry signed anew is verified, then answered from the cache.
    resigned = bridge.notify(SAMPLE, request_time="2026-12-02T10:12:00+08:00")
    assert resigned.status == 200
    assert bridge.metric("paynotify_bridge_ack_cache_hits_total") == 2
    assert bridge.metric("paynotify_bridge_ack_cache_repeats_total") == 1
    assert store_counts(hub) == (1, 1)


class CountingVerifier:
    """The bridge's real verifier, counting its calls."""

    def __init__(self, real: RequestVerifier) -> None:
        self.real = real
        self.calls = 0

    def verify(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> VerifiedRequest:
        self.calls += 1
        return self.real.verify(method, path, headers, body)


def counting(watched: list[CountingVerifier]) -> Callable[[RequestVerifier], RequestVerifier]:
    """A `wrap_verifier` for make_bridge: the wrapped verifier is appended to `watched`."""

    def wrap(real: RequestVerifier) -> RequestVerifier:
        watched.append(CountingVerifier(real))
        return watched[-1]

    return wrap


def test_a_byte_identical_retry_never_reaches_the_verifier(
    make_bridge: BridgeFactory, hub: ThreadedHub
) -> None:
    watched: list[CountingVerifier] = []
    bridge = make_bridge(hub.address, wrap_verifier=counting(watched))
    verifier = watched[0]
    with subscribed(hub.address):
        assert bridge.notify(SAMPLE, request_time=FIRST_TIME).status == 200
    assert verifier.calls == 1
    for _ in range(3):
        assert bridge.notify(SAMPLE, request_time=FIRST_TIME).status == 200
    assert verifier.calls == 1
    # Signed anew: verified once more, then answered from the cache.
    assert bridge.notify(SAMPLE, request_time="2026-12-02T10:02:00+08:00").status == 200
    assert verifier.calls == 2
    forged = bridge.notify(
        SAMPLE,
        request_time=FIRST_TIME,
        headers={"Signature": "algorithm=RSA256,keyVersion=1,signature=AAAA"},
    )
    assert forged.status == 401 and verifier.calls == 3


def test_a_repeat_gets_the_same_reply_as_the_first_answer_header_for_header(
    make_bridge: BridgeFactory, hub: ThreadedHub
) -> None:
    """Repeats are answered before Falcon (app.py's _RepeatShortcut): the reply must not show it."""
    bridge = make_bridge(hub.address)
    with subscribed(hub.address):
        first = bridge.notify(SAMPLE, request_time=FIRST_TIME, headers={"X-Request-Id": "lb-1"})
    repeat = bridge.notify(SAMPLE, request_time=FIRST_TIME, headers={"X-Request-Id": "lb-2"})
    assert bridge.metric("paynotify_bridge_ack_cache_repeats_total") == 1
    assert (repeat.status, repeat.body) == (first.status, first.body) == (200, SUCCESS_BODY)
    assert sorted(repeat.headers) == sorted(first.headers)
    same = ("content-type", "content-length", "server")
    assert {h: repeat.headers[h] for h in same} == {h: first.headers[h] for h in same}
    assert (first.headers["x-request-id"], repeat.headers["x-request-id"]) == ("lb-1", "lb-2")
    # An id the load balancer gave that is not tame is replaced, as the app does.
    wild = bridge.notify(SAMPLE, request_time=FIRST_TIME, headers={"X-Request-Id": "a b"})
    assert wild.status == 200 and wild.headers["x-request-id"] not in ("a b", "")
    # Sent chunked (no Content-Length from the client), a repeat is still answered SUCCESS.
    chunked = bridge.notify(SAMPLE, request_time=FIRST_TIME, chunked=True)
    assert (chunked.status, chunked.body) == (200, SUCCESS_BODY)
    assert bridge.metric("paynotify_bridge_requests_total", outcome="success") == 4
    assert bridge.metric("paynotify_bridge_ack_cache_hits_total") == 3


def test_repeats_skip_verification_whatever_content_types_came_first(
    make_bridge: BridgeFactory, hub: ThreadedHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app remembers at most 16 accepted Content-Type texts; other requests filling that
    memory first must not send Alipay's repeats back to the verifier."""
    monkeypatch.setattr(app_module, "_ACCEPTED_CONTENT_TYPES", set())
    watched: list[CountingVerifier] = []
    bridge = make_bridge(hub.address, wrap_verifier=counting(watched))
    for n in range(20):  # unsigned, with accepted spellings nobody else sends: all 401
        reply = bridge.notify(
            SAMPLE, headers={"Content-Type": f"application/json; v={n}"}, client_id="NOPE"
        )
        assert reply.status == 401
    with subscribed(hub.address):
        assert bridge.notify(SAMPLE, request_time=FIRST_TIME).status == 200
    calls = watched[0].calls
    assert bridge.notify(SAMPLE, request_time=FIRST_TIME).status == 200
    assert watched[0].calls == calls
    assert bridge.metric("paynotify_bridge_ack_cache_repeats_total") == 1


def test_a_retry_signed_anew_is_answered_before_falcon_like_the_first_answer(
    make_bridge: BridgeFactory, hub: ThreadedHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry Alipay signed anew is verified and answered by app.py's _RepeatShortcut: the app's
    resource never runs for it, and the reply does not show it."""
    reached: list[str] = []
    on_post = app_module._NotifyResource.on_post

    def counted(self: Any, req: Any, resp: Any) -> None:
        reached.append(req.path)
        on_post(self, req, resp)

    monkeypatch.setattr(app_module._NotifyResource, "on_post", counted)
    watched: list[CountingVerifier] = []
    bridge = make_bridge(hub.address, wrap_verifier=counting(watched))
    with subscribed(hub.address):
        first = bridge.notify(SAMPLE, request_time=FIRST_TIME, headers={"X-Request-Id": "lb-1"})
    assert (first.status, first.body, len(reached), watched[0].calls) == (200, SUCCESS_BODY, 1, 1)
    retry = bridge.notify(
        SAMPLE, request_time="2026-12-02T10:02:00+08:00", headers={"X-Request-Id": "lb-2"}
    )
    assert (retry.status, retry.body) == (200, SUCCESS_BODY)
    assert (len(reached), watched[0].calls) == (1, 2)  # verified once, and not by the app
    assert sorted(retry.headers) == sorted(first.headers)
    same = ("content-type", "content-length", "server")
    assert {h: retry.headers[h] for h in same} == {h: first.headers[h] for h in same}
    assert retry.headers["x-request-id"] == "lb-2"
    assert bridge.metric("paynotify_bridge_ack_cache_hits_total") == 1
    assert bridge.metric("paynotify_bridge_ack_cache_repeats_total") == 0
    assert bridge.metric("paynotify_bridge_requests_total", outcome="success") == 2
    assert store_counts(hub) == (1, 1)
    # A forged retry of the same body reaches the app, which answers the verifier's error once.
    forged = bridge.notify(
        SAMPLE, headers={"Signature": "algorithm=RSA256,keyVersion=1,signature=AAAA"}
    )
    assert forged.status == 401 and (len(reached), watched[0].calls) == (2, 3)
    assert bridge.metric("paynotify_bridge_signature_failures_total", reason="bad_signature") == 1


def test_the_body_is_checked_before_the_signature_as_without_the_shortcut(
    make_bridge: BridgeFactory, hub: ThreadedHub
) -> None:
    """The shortcut verifies before the app reads the body; the app still answers a bad body
    before a bad signature, and verifies nothing twice."""
    watched: list[CountingVerifier] = []
    bridge = make_bridge(hub.address, wrap_verifier=counting(watched))
    bad_signature = {"Signature": "algorithm=RSA256,keyVersion=1,signature=AAAA"}
    blank = bridge.notify(b"   \n", headers=bad_signature)
    assert blank.status == 400, blank.body
    assert b"empty" in blank.body
    assert bridge.metric("paynotify_bridge_signature_failures_total", reason="bad_signature") == 0
    forged = bridge.notify(SAMPLE, headers=bad_signature)
    assert forged.status == 401, forged.body
    unknown = bridge.notify(SAMPLE, client_id="NOPE")
    assert unknown.status == 401 and b"allowlist" in unknown.body
    assert watched[0].calls == 2  # the blank body was refused before any RSA work
    assert store_counts(hub) == (0, 0)


class FailingVerifier:
    """A verifier with a bug: it raises something no verifier should."""

    def verify(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> VerifiedRequest:
        raise RuntimeError("verifier bug")


def test_a_verifier_failing_in_the_shortcut_gets_the_apps_503(
    make_bridge: BridgeFactory, hub: ThreadedHub
) -> None:
    bridge = make_bridge(hub.address, wrap_verifier=lambda real: FailingVerifier())
    reply = bridge.notify(SAMPLE)
    assert reply.status == 503 and reply.result["resultStatus"] == "U", reply.body
    assert reply.headers.get("x-request-id")
    assert bridge.metric("paynotify_bridge_requests_total", outcome="error") == 1
    assert bridge.metric("paynotify_bridge_requests_total", outcome="success") == 0
    assert store_counts(hub) == (0, 0)


def test_a_cache_failing_in_the_shortcut_gets_the_apps_503(
    make_bridge: BridgeFactory, hub: ThreadedHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    bridge = make_bridge(hub.address)
    with subscribed(hub.address):
        assert bridge.notify(SAMPLE, request_time=FIRST_TIME).status == 200

    def broken(self: AckCache, key: bytes, generation: int) -> bool:
        raise RuntimeError("cache bug")

    monkeypatch.setattr(AckCache, "contains", broken)
    retry = bridge.notify(SAMPLE, request_time="2026-12-02T10:02:00+08:00")
    assert retry.status == 503 and retry.result["resultStatus"] == "U", retry.body
    assert retry.headers.get("x-request-id")
    assert bridge.metric("paynotify_bridge_requests_total", outcome="error") == 1
    assert bridge.metric("paynotify_bridge_ack_cache_hits_total") == 0


def test_rejected_requests_leave_no_reference_cycles(alipay_keys: Keys) -> None:
    """What verifying gave is kept in the environ only while the app runs: an exception kept
    there would hold its traceback's frames and so the environ and the body, for the cyclic
    collector to find, once per forged request."""
    config = bridge_config(alipay_keys, [f"127.0.0.1:{free_port()}"])
    publisher = HubPublisher(config.hubs, config.publish_timeout)
    try:
        app = create_app(config, build_verifier(config), publisher)
        forged = {"Signature": "algorithm=RSA256,keyVersion=1,signature=AAAA"}
        headers = {**signed_headers(alipay_keys, SAMPLE, path=config.path), **forged}
        statuses: list[str] = []

        def call() -> None:
            environ = _environ(config, headers, str(len(SAMPLE)))
            b"".join(app(environ, lambda status, hdrs, exc_info=None: statuses.append(status)))

        call()  # warm: Falcon's and the metrics' first-use objects
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds stays in gc.garbage
        try:
            for _ in range(20):
                call()
            gc.collect()
            # Other threads of the test process may leave cycles of their own: only this
            # request's objects count.
            ours = [o for o in gc.garbage if isinstance(o, (SignatureRejected, falcon.Request))]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
        assert statuses and all(status.startswith("401") for status in statuses), statuses
        assert not ours, f"{len(ours)} rejections and requests in reference cycles after 20"
    finally:
        publisher.close()


def _environ(config: BridgeConfig, headers: Mapping[str, str], length: str) -> dict[str, Any]:
    """The WSGI environ of a POST of SAMPLE to the notify path, for the app called in-process."""
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": config.path,
        "REQUEST_URI": config.path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(SAMPLE),
        "wsgi.errors": io.StringIO(),
        "CONTENT_TYPE": headers["Content-Type"],
        "CONTENT_LENGTH": length,
        **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()},
    }


@pytest.mark.parametrize("length", ["\u00b2", "1" * 5000, "-1", "0"])
def test_a_content_length_waitress_would_refuse_still_gets_the_apps_answer(
    alipay_keys: Keys, length: str
) -> None:
    """Behind another WSGI server: the app's 4xx, never an exception out of the shortcut."""
    config = bridge_config(alipay_keys, [f"127.0.0.1:{free_port()}"])
    publisher = HubPublisher(config.hubs, config.publish_timeout)
    try:
        app = create_app(config, build_verifier(config), publisher)
        headers = signed_headers(alipay_keys, SAMPLE, path=config.path)
        environ = _environ(config, headers, length)
        statuses: list[str] = []
        b"".join(app(environ, lambda status, headers, exc_info=None: statuses.append(status)))
        assert statuses and statuses[0][:1] == "4", statuses
    finally:
        publisher.close()


def test_without_verification_no_request_passes_for_a_verified_one(
    make_bridge: BridgeFactory, hub: ThreadedHub
) -> None:
    """--insecure-skip-signature-check: every request is counted unverified, repeats included."""
    bridge = make_bridge(hub.address, insecure_skip_verification=True)
    same_time = "2026-12-02T10:00:00+08:00"
    with subscribed(hub.address):
        assert bridge.notify(SAMPLE, request_time=same_time).status == 200
    assert bridge.notify(SAMPLE, request_time=same_time).status == 200  # from the cache
    assert bridge.metric("paynotify_bridge_ack_cache_hits_total") == 1
    assert bridge.metric("paynotify_bridge_ack_cache_repeats_total") == 0
    assert bridge.metric("paynotify_bridge_unverified_requests_total") == 2


def test_the_signature_of_a_retry_is_still_verified(
    make_bridge: BridgeFactory, hub: ThreadedHub
) -> None:
    bridge = make_bridge(hub.address)
    with subscribed(hub.address):
        assert bridge.notify(SAMPLE).status == 200
    bad_signature = "algorithm=RSA256,keyVersion=1,signature=AAAA"
    forged = bridge.notify(SAMPLE, headers={"Signature": bad_signature})
    assert forged.status == 401
    unknown = bridge.notify(SAMPLE, client_id="NOPE")
    assert unknown.status == 401
    assert bridge.metric("paynotify_bridge_ack_cache_hits_total") == 0


def test_a_body_not_acknowledged_is_not_remembered(
    make_bridge: BridgeFactory, hub: ThreadedHub
) -> None:
    bridge = make_bridge(hub.address, publish_timeout=0.5)
    unanswered = bridge.notify(SAMPLE)  # no subscriber: nobody acknowledges it in time
    assert unanswered.status == 503
    again = bridge.notify(SAMPLE)
    assert again.status == 503  # asked the hub again, not answered from the cache
    with subscribed(hub.address):
        assert bridge.notify(SAMPLE).status == 200
    assert store_counts(hub) == (1, 3)  # every attempt reached the hub's store
    assert bridge.metric("paynotify_bridge_ack_cache_hits_total") == 0


def test_a_body_differing_in_one_byte_goes_to_the_hub(
    make_bridge: BridgeFactory, hub: ThreadedHub
) -> None:
    bridge = make_bridge(hub.address)
    spaced = SAMPLE.rstrip() + b"\n "
    with subscribed(hub.address):
        assert bridge.notify(SAMPLE).status == 200
        assert bridge.notify(spaced).status == 200  # the same identity: deduplicated by the hub
    assert store_counts(hub) == (1, 2)
    assert bridge.metric("paynotify_bridge_ack_cache_hits_total") == 0


def test_with_the_cache_off_every_retry_reaches_the_hub(
    make_bridge: BridgeFactory, hub: ThreadedHub
) -> None:
    bridge = make_bridge(hub.address, ack_cache_size=0)
    with subscribed(hub.address):
        for _ in range(3):
            assert bridge.notify(SAMPLE).status == 200
    assert store_counts(hub) == (1, 3)
    assert bridge.metric("paynotify_bridge_ack_cache_hits_total") == 0


@pytest.mark.parametrize("stop", ["terminate", "kill"])
def test_a_hub_restarted_with_a_new_required_group_gets_the_retry(
    make_bridge: BridgeFactory, tmp_path: Path, stop: str
) -> None:
    """The cache holds the answer of the hub's old configuration; a restart (graceful or kill -9)
    makes the bridge forget it, so the new group gates the retry as it would without the cache."""
    with hub_process(tmp_path, groups=("billing:required",)) as hub:
        bridge = make_bridge(hub.address, publish_timeout=1.0)
        with subscribed(hub.address):
            assert bridge.notify(SAMPLE).status == 200
        assert bridge.notify(SAMPLE).status == 200  # answered from the cache
        assert bridge.metric("paynotify_bridge_ack_cache_hits_total") == 1

        getattr(hub, stop)()
        if stop == "terminate":
            hub.wait()
        hub.args += ["--group", "audit:required"]
        hub.restart()
        _wait_until(lambda: bridge.get("/readyz").status == 200)

        # Audit has not seen it: not SUCCESS (pending, or unavailable while the bridge's streams
        # come back; either way Alipay sends it again).
        for _ in range(3):
            retry = bridge.notify(SAMPLE)
            assert retry.status == 503, retry.body
        assert bridge.metric("paynotify_bridge_ack_cache_hits_total") == 1  # none since
        with subscribed(hub.address, group="audit") as audit:
            assert audit.next().raw_json == SAMPLE
            replies = [bridge.notify(SAMPLE) for _ in range(3)]  # Alipay's next retries
        assert replies[-1].body == SUCCESS_BODY


def _wait_until(condition: Callable[[], bool], timeout: float = SOON) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)
