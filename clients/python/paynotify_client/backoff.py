"""How long to wait before reopening a stream that broke: exponential, capped, jittered."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True)
class Backoff:
    """Reconnect backoff: `initial * multiplier**(attempt - 1)` seconds, at most `maximum`, and then
    shortened by up to `jitter` (a fraction) so that many subscribers of a restarted hub do not all
    come back in the same instant. The attempt count starts again once a stream opens.
    """

    initial: float = 0.1
    maximum: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError("Backoff needs 0 < initial <= maximum")
        if self.multiplier < 1:
            raise ValueError("Backoff.multiplier must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("Backoff.jitter is a fraction between 0 and 1")

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before reconnect attempt `attempt` (1-based); `rand` returns [0, 1)."""
        exponent = min(max(attempt - 1, 0), 64)  # keeps the power finite for any attempt count
        capped = min(self.maximum, self.initial * self.multiplier**exponent)
        return capped * (1 - self.jitter * rand())
