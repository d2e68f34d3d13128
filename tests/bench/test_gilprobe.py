"""bench/gilprobe.py tells a call that gives up the GIL from one that holds it; the bridge's
signature check holds it (cryptography's own verify does not, which is why the bridge does not
use it: docs/benchmark.md)."""

from __future__ import annotations

import hashlib
import time
from functools import cache

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bench.gilprobe import releases_gil
from paynotify_bridge.app import new_request_id
from paynotify_bridge.signature import verify_rsa256

CONTENT = b"POST /alipay/notify\nC.T." + b"{}" * 400


@cache
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_a_blocking_call_is_seen_releasing_the_gil() -> None:
    caught, _ = releases_gil(lambda: time.sleep(0.001), calls=5)
    assert caught == 5


def test_a_release_of_microseconds_is_seen() -> None:
    """cryptography's verify gives the GIL up for its ~20 µs RSA step: why the bridge does not
    call it (should a release change that, this fails and docs/benchmark.md needs a look)."""
    signature = key().sign(CONTENT, padding.PKCS1v15(), hashes.SHA256())
    public = key().public_key()
    caught, _ = releases_gil(
        lambda: public.verify(signature, CONTENT, padding.PKCS1v15(), hashes.SHA256()), calls=10
    )
    assert caught >= 1


def test_pure_python_and_hashing_are_seen_holding_it() -> None:
    assert releases_gil(lambda: sum(range(1000)))[0] == 0
    assert releases_gil(lambda: hashlib.sha256(CONTENT).digest())[0] == 0


def test_the_bridges_signature_check_holds_the_gil() -> None:
    signature = key().sign(CONTENT, padding.PKCS1v15(), hashes.SHA256())
    public = key().public_key()
    assert releases_gil(lambda: verify_rsa256(public, signature, CONTENT))[0] == 0


def test_the_bridges_request_ids_hold_the_gil() -> None:
    assert releases_gil(new_request_id)[0] == 0
