"""The signed bodies this bridge recently answered SUCCESS, so that Alipay's retry of one is
answered without asking the hub.

Alipay resends a notification whose SUCCESS reply it did not receive (a lost reply, a timeout on
its side): 2 minutes later, then 10, 10, 60 ... The hub would answer such a retry SUCCESS again
("acknowledged earlier"): the promise was kept on the first attempt and an acknowledgement is
never withdrawn. This cache lets the bridge give the same answer for the cost of verifying the
signature, which matters when a burst of retries arrives (measured in `make bench`, duplicate row).

- Only a request that passed the verifier is looked up (with `--insecure-skip-signature-check`,
  local development only, that is every request), and only a body the hub answered acknowledged
  is remembered; anything else goes to the hub as before.
- The key is BLAKE2b-128 over the Client-Id (length-prefixed) and the exact body bytes: a retry
  that differs in any byte is a miss and goes to the hub (which deduplicates by identity).
- Hub generations: the hub's answer holds for the hub's configuration (its required groups). A
  hub restart is how that configuration changes, and it breaks the bridge's streams to that hub,
  which moves the publisher's `hub_generation` on: the cache then forgets everything, and a body
  whose publish was answered across such a change is not remembered. A hub that restarts with a
  new required group therefore gets every retry of an earlier notification, as it would without
  the cache.
- Bounded in entries and in time: two generations of at most `capacity // 2` keys each; a
  generation lasts `ttl` seconds, so a key is remembered for at least `ttl` and at most `2 * ttl`
  seconds, unless traffic fills a generation sooner (at the defaults, above ~28 answers per second
  sustained): then a key lasts at least the time the next `capacity // 2` answers take. About 90
  bytes per key (measured with tracemalloc).
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
    """Thread-safe; `key()` needs no lock, `contains()` and `add()` take it (O(1) each).

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
        self._current: set[bytes] = set()
        self._previous: set[bytes] = set()
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

    def contains(self, key: bytes, generation: int) -> bool:
        with self._lock:
            self._age(self._clock(), generation)
            return key in self._current or key in self._previous

    def add(self, key: bytes, generation: int) -> None:
        with self._lock:
            now = self._clock()
            self._age(now, generation)
            if generation != self._hub_generation:
                return  # answered before a hub restart the cache has seen since
            self._current.add(key)
            if len(self._current) >= self._generation_size:
                self._rotate(now)

    def __len__(self) -> int:
        with self._lock:
            self._age(self._clock(), self._hub_generation)
            return len(self._current) + len(self._previous)

    def _age(self, now: float, generation: int) -> None:
        if generation > self._hub_generation:
            self._hub_generation = generation
            self._current, self._previous, self._started = set(), set(), now
            return
        elapsed = now - self._started
        if elapsed >= 2 * self._ttl:
            self._current, self._previous, self._started = set(), set(), now
        elif elapsed >= self._ttl:
            # The generation began at `_started`: the next one begins exactly `ttl` later, so a
            # quiet spell before this call does not stretch how long its keys are remembered.
            self._previous, self._current = self._current, set()
            self._started += self._ttl

    def _rotate(self, now: float) -> None:
        self._previous, self._current, self._started = self._current, set(), now
