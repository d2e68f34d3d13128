"""The signed bodies this bridge recently answered SUCCESS, so that Alipay's retry of one is
answered without asking the hub, and, when it is byte for byte a request already verified, without
verifying its signature again.

Alipay resends a notification whose SUCCESS reply it did not receive (a lost reply, a timeout on
its side): 2 minutes later, then 10, 10, 60 ... The hub would answer such a retry SUCCESS again
("acknowledged earlier"): the promise was kept on the first attempt and an acknowledgement is
never withdrawn. This cache lets the bridge give the same answer for the cost of hashing the
request (or of verifying the signature of a retry signed anew), which matters when a burst of
retries arrives (measured in `make bench`, the duplicate rows).

- Only a body the hub answered acknowledged is remembered, with the fingerprint of the request
  that carried it (its path, Request-Time and Signature header besides Client-Id and body), after
  that request passed the verifier; anything else goes to the hub as before.
- A retry is answered from the cache in one of two ways. Byte for byte the request that was
  verified (same path, Client-Id, Request-Time, Signature header and body): its fingerprint
  matches, and the signature is not verified again, as the verifier, a pure function of exactly
  those bytes and the keys and Client-Ids loaded at start, would give the same answer. (Whether
  Alipay's retries are byte for byte the first send is not documented;
  `paynotify_bridge_ack_cache_repeats_total` shows it.) Otherwise (Alipay signed
  the retry anew, say) the request is verified, and a body remembered is answered SUCCESS.
  Anything that fails verification is rejected as without the cache.
- The key is BLAKE2b-128 over the Client-Id (length-prefixed) and the exact body bytes: a retry
  that differs in any body byte is a miss and goes to the hub (which deduplicates by identity). The
  fingerprint is BLAKE2b-128 over the key and the repr of the other signed fields (unambiguous):
  answering a request that was never verified would take a second preimage of one of them.
- Hub generations: the hub's answer holds for the hub's configuration (its required groups). A
  hub restart is how that configuration changes, and it breaks the bridge's streams to that hub,
  which moves the publisher's `hub_generation` on: the cache then forgets everything, and a body
  whose publish was answered across such a change is not remembered. A hub that restarts with a
  new required group therefore gets every retry of an earlier notification, as it would without
  the cache.
- Bounded in entries and in time: two generations of at most `capacity // 2` keys each; a
  generation lasts `ttl` seconds, so a key is remembered for at least `ttl` and at most `2 * ttl`
  seconds, unless traffic fills a generation sooner (at the defaults, above ~28 answers per second
  sustained): then a key lasts at least the time the next `capacity // 2` answers take. Each
  generation is one anonymous memory mapping of 32-byte slots (key and fingerprint, at most half
  of the slots used), mapped at its first entry and unmapped when dropped: 64 bytes per entry of
  capacity, 6.4 MB at the default however full, no Python object per entry. (A bytearray of
  megabytes freed by one of waitress's threads could stay in that thread's malloc arena: the
  bridge's RSS then grew by a generation at some rotations.)
- Per process and lost on restart: several bridges behind a load balancer each remember what they
  answered; a miss costs a Publish, never a wrong answer.

The price: a retry answered here does not reach the hub, so the hub's receipt count for that
notification ("Alipay sent it N times") does not include it; the bridge counts such answers in
`paynotify_bridge_ack_cache_hits_total`. `--ack-cache-size 0` turns the cache off.
"""

from __future__ import annotations

import hashlib
import hmac
import mmap
import threading
import time
from collections.abc import Callable
from typing import Final

__all__ = ["DEFAULT_ACK_CACHE_SIZE", "DEFAULT_ACK_CACHE_TTL", "NO_FINGERPRINT", "AckCache"]

DEFAULT_ACK_CACHE_SIZE: Final = 100_000
# Alipay's first retries come after 2, 10 and 10 minutes: a key lives 30 to 60 minutes.
DEFAULT_ACK_CACHE_TTL: Final = 1800.0
_DIGEST_BYTES: Final = 16
_PERSON: Final = b"paynotify-ack1"
_FINGERPRINT_PERSON: Final = b"paynotify-req1"
_SLOT: Final = 2 * _DIGEST_BYTES
_EMPTY: Final = bytes(_DIGEST_BYTES)
# The fingerprint added for a request that was not verified (--insecure-skip-signature-check):
# no request is ever taken for it.
NO_FINGERPRINT: Final = _EMPTY


class _Table:
    """At most `entries` key -> fingerprint pairs in one byte array: open addressing, linear
    probing from the key's (per-process salted) hash, never more than half full, no deletes."""

    __slots__ = ("_data", "_slots", "count")

    def __init__(self, entries: int) -> None:
        self._slots = 2 * entries
        self._data: mmap.mmap | None = None  # mapped at the first put
        self.count = 0

    def get(self, key: bytes) -> bytes | None:
        if self._data is None or key == _EMPTY:
            return None
        at, found = self._probe(self._data, key)
        return bytes(self._data[at + _DIGEST_BYTES : at + _SLOT]) if found else None

    def put(self, key: bytes, fingerprint: bytes) -> None:
        if key == _EMPTY:
            return  # a digest of all zeros (p = 2**-128) marks free slots: not remembered
        if self._data is None:
            # An anonymous mapping, not a bytearray: its pages are zero and become resident as
            # they are first written, and it goes back to the system whole when the generation
            # is dropped (a freed bytearray of megabytes may stay in a thread's malloc arena).
            self._data = mmap.mmap(-1, self._slots * _SLOT)
        at, found = self._probe(self._data, key)
        if found:
            self._data[at + _DIGEST_BYTES : at + _SLOT] = fingerprint
        else:
            self._data[at : at + _SLOT] = key + fingerprint
            self.count += 1

    def _probe(self, data: mmap.mmap, key: bytes) -> tuple[int, bool]:
        """The offset of `key`'s slot and True, or of the free slot where it would go and False
        (there is one: the table is never more than half full)."""
        slot = hash(key) % self._slots
        while True:
            at = slot * _SLOT
            stored = data[at : at + _DIGEST_BYTES]
            if stored in (key, _EMPTY):
                return at, stored == key
            slot = slot + 1 if slot + 1 < self._slots else 0


class AckCache:
    """Thread-safe; `key()` and `fingerprint()` need no lock, the rest take it (O(1) each).

    `generation` is the publisher's `hub_generation` as the caller read it before asking the
    hub: a newer one empties the cache, and a key answered under an older one is not added.
    """

    def __init__(
        self, capacity: int, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if capacity < 2:
            raise ValueError(f"capacity {capacity}: must be at least 2")
        if ttl <= 0:
            raise ValueError(f"ttl {ttl}: must be positive")
        self._generation_size = capacity // 2
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        # key -> fingerprint of the verified request that carried the body
        self._current = _Table(self._generation_size)
        self._previous = _Table(self._generation_size)
        self._started = clock()
        self._hub_generation = 0

    @staticmethod
    def key(client_id: str, body: bytes) -> bytes:
        digest = hashlib.blake2b(digest_size=_DIGEST_BYTES, person=_PERSON)
        client = client_id.encode("utf-8", "surrogatepass")  # one byte string per text
        digest.update(len(client).to_bytes(4, "big"))
        digest.update(client)
        digest.update(body)
        return digest.digest()

    @staticmethod
    def fingerprint(key: bytes, method: str, path: str, request_time: str, signature: str) -> bytes:
        """The request behind `key` (Client-Id and body) with every other field its signature
        covers: `signature` is the Signature header's whole value (key version included)."""
        # The repr of a tuple of strings reads back as the same tuple (so distinct fields never
        # hash the same text) and escapes lone surrogates: one call instead of one per field.
        fields = repr((method, path, request_time, signature)).encode("utf-8")
        return hashlib.blake2b(
            key + fields, digest_size=_DIGEST_BYTES, person=_FINGERPRINT_PERSON
        ).digest()

    def contains(self, key: bytes, generation: int) -> bool:
        """The body behind `key` was answered acknowledged (ask after verifying the request)."""
        return self._known(key, generation) is not None

    def verified_before(self, key: bytes, fingerprint: bytes, generation: int) -> bool:
        """The body behind `key` was answered acknowledged, carried by a verified request with
        this `fingerprint`: the same request again needs no verification."""
        known = self._known(key, generation)
        if known is None or known == NO_FINGERPRINT:
            return False
        return hmac.compare_digest(known, fingerprint)

    def add(self, key: bytes, fingerprint: bytes, generation: int) -> None:
        if len(key) != _DIGEST_BYTES or len(fingerprint) != _DIGEST_BYTES:
            raise ValueError("a key and a fingerprint are 16-byte digests (key(), fingerprint())")
        with self._lock:
            now = self._clock()
            self._age(now, generation)
            if generation != self._hub_generation:
                return  # answered before a hub restart the cache has seen since
            self._current.put(key, fingerprint)
            if self._current.count >= self._generation_size:
                self._rotate(now)

    def _known(self, key: bytes, generation: int) -> bytes | None:
        """The fingerprint remembered with `key`, None if the key is not remembered."""
        with self._lock:
            self._age(self._clock(), generation)
            return self._current.get(key) or self._previous.get(key)

    def __len__(self) -> int:
        with self._lock:
            self._age(self._clock(), self._hub_generation)
            return self._current.count + self._previous.count

    def _age(self, now: float, generation: int) -> None:
        if generation > self._hub_generation:
            self._hub_generation = generation
            self._current, self._previous, self._started = self._new(), self._new(), now
            return
        elapsed = now - self._started
        if elapsed >= 2 * self._ttl:
            self._current, self._previous, self._started = self._new(), self._new(), now
        elif elapsed >= self._ttl:
            # The generation began at `_started`: the next one begins exactly `ttl` later, so a
            # quiet spell before this call does not stretch how long its keys are remembered.
            self._previous, self._current = self._current, self._new()
            self._started += self._ttl

    def _rotate(self, now: float) -> None:
        self._previous, self._current, self._started = self._current, self._new(), now

    def _new(self) -> _Table:
        return _Table(self._generation_size)
