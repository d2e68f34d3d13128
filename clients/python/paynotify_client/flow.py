"""Flow control: how many deliveries a stream holds at once and how many callbacks run at once."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_MAX_IN_FLIGHT", "FlowControl"]

# Enough to keep a service busy through the round trip of an ack, small enough that a crashed member
# strands few deliveries until their leases expire.
DEFAULT_MAX_IN_FLIGHT = 16


@dataclass(frozen=True)
class FlowControl:
    """Limits for one Subscriber.

    max_in_flight: deliveries leased to this stream and not yet settled (acked, nacked or rejected).
        Sent to the hub when the stream opens; the hub never streams more (default 16).
    callback_threads: callbacks running at once. `None` (the default) means `max_in_flight`, so no
        delivery waits for a thread while its lease runs; a lower number makes the rest queue (their
        ack deadline keeps running while they wait). Never more than `max_in_flight` are used.
    """

    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    callback_threads: int | None = None

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {self.max_in_flight}")
        if self.callback_threads is not None and self.callback_threads < 1:
            raise ValueError(f"callback_threads must be at least 1, not {self.callback_threads}")

    @property
    def threads(self) -> int:
        """How many callback threads the Subscriber starts."""
        if self.callback_threads is None:
            return self.max_in_flight
        return min(self.callback_threads, self.max_in_flight)
