"""The signed bodies this bridge recently answered SUCCESS, so that Alipay's retry of one is
answered without asking the hub.

Alipay resends a notification whose SUCCESS reply it did not receive (a lost reply, a timeout on
its side): 2 minutes later, then 10, 10, 60 ... The hub would answer such a retry SUCCESS again
("acknowledged earlier"): the promise was kept on the first attempt and an acknowledgement is
never withdrawn. This cache lets the bridge give the same answer for the cost of verifying the
signature, which matters when a burst of retries arrives (measured in `make bench`, duplicate row).

- Only a request whose signature verified is looked up, and only a body the hub answered
  acknowledged is remembered; anything else goes to the hub as before.
- The key is BLAKE2b-128 over the Client-Id and the exact body bytes: a retry that differs in any
  byte is a miss and goes to the hub (which deduplicates by identity).
- Bounded in entries and in time: two generations of at most `capacity // 2` keys each; a
  generation lasts `ttl` seconds (or until full), so a key is remembered for between `ttl` and
  `2 * ttl` seconds unless traffic fills the cache sooner. About 80 bytes per key.
- Per process and lost on restart: several bridges behind a load balancer each remember what they
  answered; a miss costs a Publish, never a wrong answer.

The price: a retry answered here does not reach the hub, so the hub's receipt count for that
notification ("Alipay sent it N times") does not include it; the bridge counts such answers in
`paynotify_bridge_ack_cache_hits_total`. `--ack-cache-size 0` turns the cache off.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Final

__all__ = ["DEFAULT_ACK_CACHE_SIZE", "DEFAULT_ACK_CACHE_TTL", "AckCache"]

DEFAULT_ACK_CACHE_SIZE: Final = 100_000
# Alipay's first retries come after 2, 10 and 10 minutes: a key lives 30 to 60 minutes.
DEFAULT_ACK_CACHE_TTL: Final = 1800.0
_DIGEST_BYTES: Final = 16
_PERSON: Final = b"paynotify-ack1"


class AckCache:
    """Thread-safe; `key()` outside the lock, `__contains__` and `add()` under it (O(1) each)."""

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
        self._current: set[bytes] = set()
        self._previous: set[bytes] = set()
        self._started = clock()

    @staticmethod
    def key(client_id: str, body: bytes) -> bytes:
        digest = hashlib.blake2b(digest_size=_DIGEST_BYTES, person=_PERSON)
        client = client_id.encode("utf-8", "surrogateescape")
        digest.update(len(client).to_bytes(4, "big"))
        digest.update(client)
        digest.update(body)
        return digest.digest()

    def __contains__(self, key: bytes) -> bool:
        with self._lock:
            self._age()
            return key in self._current or key in self._previous

    def add(self, key: bytes) -> None:
        with self._lock:
            self._age()
            self._current.add(key)
            if len(self._current) >= self._generation_size:
                self._rotate(self._clock())

    def __len__(self) -> int:
        with self._lock:
            self._age()
            return len(self._current) + len(self._previous)

    def _age(self) -> None:
        now = self._clock()
        elapsed = now - self._started
        if elapsed >= 2 * self._ttl:
            self._current, self._previous, self._started = set(), set(), now
        elif elapsed >= self._ttl:
            self._rotate(now)

    def _rotate(self, now: float) -> None:
        self._previous, self._current, self._started = self._current, set(), now
