"""bench/gilprobe.py tells a call that gives up the GIL from one that holds it; the bridge's
signature check and request ids hold it (cryptography's own verify does not, which is why the
bridge does not use it: docs/benchmark.md)."""

from __future__ import annotations

import hashlib
import time
from functools import cache

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bench.gilprobe import gil_catches
from paynotify_bridge.app import new_request_id
from paynotify_bridge.signature import verify_rsa256

CONTENT = b"POST /alipay/notify\nC.T." + b"{}" * 400


@cache
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_calls_that_give_the_gil_up_are_seen() -> None:
    """Releases of milliseconds, so a slow wake of the spinner on a loaded machine still sees
    them. (cryptography's verify releases it for ~20 µs only: the probe caught that in 33 calls of
    40 in one run here and in 2 of 5 in another; too few, on a loaded machine, to hold a test to.)
    """
    assert gil_catches(lambda: time.sleep(0.005), calls=5)[0] >= 1
    big = bytes(8 << 20)  # hashlib gives the GIL up while hashing more than 2 KiB
    assert gil_catches(lambda: hashlib.sha256(big).digest(), calls=5)[0] >= 1


def test_pure_python_and_hashing_are_seen_holding_it() -> None:
    assert gil_catches(lambda: sum(range(1000)))[0] == 0
    assert gil_catches(lambda: hashlib.sha256(CONTENT).digest())[0] == 0


def test_the_bridges_signature_check_holds_the_gil() -> None:
    signature = key().sign(CONTENT, padding.PKCS1v15(), hashes.SHA256())
    public = key().public_key()
    assert gil_catches(lambda: verify_rsa256(public, signature, CONTENT))[0] == 0


def test_the_bridges_request_ids_hold_the_gil() -> None:
    assert gil_catches(new_request_id)[0] == 0
