"""One subscriber stream as the broker sees it: settings, in-flight leases, outbound queue.

Pure asyncio; the gRPC servicer reads `next_batch()` and the broker's dispatch loop fills it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass

from paynotify_hub.domain import MAX_NOTIFICATION_ID, GroupSpec, Lease
from paynotify_hub.errors import ShuttingDown

__all__ = [
    "DeliveryKey",
    "Member",
    "MemberSettings",
    "format_delivery_id",
    "parse_delivery_id",
    "wait_event",
]

# (notification id, lease token): what a delivery id names.
DeliveryKey = tuple[int, str]

_MAX_ID_DIGITS = 19


def format_delivery_id(notification_id: int, token: str) -> str:
    return f"{notification_id}.{token}"


def parse_delivery_id(delivery_id: str) -> DeliveryKey | None:
    """The key a delivery id names, or None when it is malformed (never an exception)."""
    head, sep, token = delivery_id.partition(".")
    if not sep or not token or not head.isascii() or not head.isdigit():
        return None
    if len(head) > _MAX_ID_DIGITS or len(token) > 128:
        return None
    notification_id = int(head)
    if not 0 < notification_id <= MAX_NOTIFICATION_ID:
        return None
    return notification_id, token


@dataclass(frozen=True)
class MemberSettings:
    """The settings in force for one stream, after the hub applied defaults and limits."""

    group: GroupSpec
    client_id: str
    max_in_flight: int
    ack_deadline: float
    notify_types: frozenset[str]


class Member:
    """A stream's flow control: at most `max_in_flight` leases it has not answered for.

    A lease that expired still holds its slot until the member acts on it (and learns it is
    STALE): its callback may still be running, and sending more would overrun the subscriber.
    The dispatch loop waits on `wait_for_news()`; anything that may free a slot or make work due
    calls `wake()`.
    """

    def __init__(self, member_id: str, settings: MemberSettings) -> None:
        self.id = member_id
        self.settings = settings
        self._in_flight: dict[DeliveryKey, float] = {}
        # When Alipay first sent each held notification (for the ack latency metric), and which
        # attempt the lease is (for the state an ack tells waiting publishes).
        self._received: dict[DeliveryKey, tuple[float, int]] = {}
        self._outbound: asyncio.Queue[Lease | None] = asyncio.Queue()
        self._news = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self.dispatching = True
        self.ended = False
        # Whether work may have become pending with a delay (a nack, an expired or released
        # lease, another hub's news) since the dispatch loop last asked when it falls due.
        self.maybe_delayed = True
        # When the earliest pending delivery falls due, as the store last said (None: none).
        self.due_at: float | None = None
        # Whether the dispatch loop is waiting for news (no claim of its own under way), and a
        # claim submitted for it meanwhile with the slots it may fill (see `Dispatcher.kick`).
        self.idle = False
        self.kicked: tuple[int, Awaitable[list[Lease]]] | None = None
        self._news_since_kick = False

    @property
    def group(self) -> str:
        return self.settings.group.name

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def free_slots(self) -> int:
        return self.settings.max_in_flight - len(self._in_flight)

    def hand_out(self, leases: Sequence[Lease]) -> None:
        for lease in leases:
            key = (lease.notification_id, lease.token)
            self._in_flight[key] = lease.lease_expires_at
            self._received[key] = (lease.first_received_at, lease.attempt)
            self._outbound.put_nowait(lease)
        self._update_drained()

    def holds(self, key: DeliveryKey) -> bool:
        return key in self._in_flight

    def settle(self, key: DeliveryKey) -> None:
        """The member acted on `key` (or learnt it is stale): its slot is free."""
        self._received.pop(key, None)
        was_full = self.free_slots() <= 0
        if self._in_flight.pop(key, None) is not None:
            self._update_drained()
            if was_full:  # the dispatch loop waits for a free slot only when there was none
                self.wake(due_now=True)

    def first_received_at(self, key: DeliveryKey) -> float | None:
        held = self._received.get(key)
        return None if held is None else held[0]

    def attempt(self, key: DeliveryKey) -> int | None:
        """Which attempt the held lease `key` is (None: not held)."""
        held = self._received.get(key)
        return None if held is None else held[1]

    def extended(self, key: DeliveryKey, lease_expires_at: float) -> None:
        if key in self._in_flight:
            self._in_flight[key] = lease_expires_at

    def wake(self, *, due_now: bool = False) -> None:
        """Something may be claimable; `due_now`: only work that is due at once (a new
        notification, a free slot), nothing that waits for a backoff."""
        if not due_now:
            self.maybe_delayed = True
        if self.kicked is not None:
            self._news_since_kick = True
        self._news.set()

    def kick(self, slots: int, claim: Awaitable[list[Lease]]) -> None:
        """`claim` (for up to `slots`) was submitted for the dispatch loop: it sees everything
        queued before it. Wakes the loop; news from now on is news the claim may not see."""
        self.kicked = (slots, claim)
        self._news_since_kick = False
        self._news.set()

    def begin_step(self) -> tuple[int, Awaitable[list[Lease]]] | None:
        """The dispatch loop starts a step: forget the news its claim will see (a claim
        submitted now sees all of it; a kicked claim all but what came since the kick), and
        take the kicked claim, if any."""
        kicked, self.kicked = self.kicked, None
        if kicked is None or not self._news_since_kick:
            self._news.clear()
        return kicked

    async def wait_for_news(self, seconds: float) -> None:
        """Until `wake()` or `seconds`, whichever first."""
        await wait_event(self._news, seconds)

    async def wait_drained(self, seconds: float) -> bool:
        """Until nothing is in flight; False when `seconds` passed first."""
        return await wait_event(self._drained, seconds)

    async def next_batch(self) -> list[Lease]:
        """Everything queued for the stream, waiting for at least one lease.

        Raises ShuttingDown once the hub ended the stream.
        """
        if self.ended:
            raise ShuttingDown("hub shutting down, reconnect")
        first = await self._outbound.get()
        batch: list[Lease] = []
        item = first
        while item is not None:
            batch.append(item)
            if self._outbound.empty():
                return batch
            item = self._outbound.get_nowait()
        self.ended = True
        if batch:
            return batch
        raise ShuttingDown("hub shutting down, reconnect")

    def end(self) -> None:
        """The hub ends this stream: no new leases; the writer raises ShuttingDown."""
        self.dispatching = False
        self._outbound.put_nowait(None)
        self.wake()

    def _update_drained(self) -> None:
        if self._in_flight:
            self._drained.clear()
        else:
            self._drained.set()


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Whether `event` is set within `seconds` (at once when it already is)."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
