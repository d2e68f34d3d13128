"""Subscribers (the real client library) whose every delivery and ack result is written down.

    ledger = Ledger()
    with ledger.members([(hub1.address, "billing", "b@hub1"), (hub2.address, "billing", "b@hub2")]):
        ...
    ledger.acked("billing")               # notification ids whose ack the hub confirmed (OK)
    ledger.duplicates_after_ack()         # deliveries of a notification its group had acked: bugs
    ledger.redeliveries_before_ack()      # later deliveries of one not acked yet: allowed, counted

A delivery of a notification whose group had already acknowledged it (the hub answered the ack OK)
is a violation. Earlier redeliveries (a lease lost with a killed hub, an ack that never landed) are
at-least-once delivery doing its job.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from paynotify.v1 import hub_pb2
from paynotify_client import Backoff, FlowControl, Message, Subscriber

__all__ = ["Delivery", "Ledger", "MemberSpec"]

# (address, group, member label) or with a decision: "ack" (default) or "hold" (never settle).
MemberSpec = tuple[str, str, str] | tuple[str, str, str, str]
QUICK_RECONNECT = Backoff(initial=0.1, maximum=0.5)


@dataclass
class Delivery:
    group: str
    member: str
    delivery_id: str
    notification_id: str
    payment_id: str
    attempt: int
    received: float  # time.time() when the callback ran
    lease_expires_at: float  # as the hub stated it on delivery (epoch seconds)
    message: Message = field(repr=False)
    ack_status: int | None = None  # the hub's ActionStatus for our ack, once it answered
    ack_confirmed: float | None = None


@dataclass
class Ledger:
    """Everything the tracked subscribers saw; safe to use from their threads."""

    ack_deadline: float = 10.0
    max_in_flight: int = 8
    ack_delay: float = 0.0  # seconds a callback works before it acks
    deliveries: list[Delivery] = field(default_factory=list)
    _by_id: dict[str, Delivery] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _news: threading.Condition = field(init=False)
    _decisions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._news = threading.Condition(self._lock)

    # -- subscribing ------------------------------------------------------------------------

    @contextlib.contextmanager
    def members(
        self, specs: Sequence[MemberSpec], close_timeout: float = 3.0
    ) -> Iterator[dict[str, Subscriber]]:
        """One Subscriber per spec, all closed on exit."""
        subscribers: dict[str, Subscriber] = {}
        try:
            for spec in specs:
                subscribers[spec[2]] = self.subscribe(*spec)
            yield subscribers
        finally:
            for subscriber in subscribers.values():
                subscriber.close(timeout=close_timeout)

    def subscribe(self, address: str, group: str, member: str, decide: str = "ack") -> Subscriber:
        self._decisions[member] = decide
        subscriber = Subscriber(
            address,
            group,
            client_id=member.replace("@", "-"),
            flow_control=FlowControl(max_in_flight=self.max_in_flight),
            ack_deadline=self.ack_deadline,
            backoff=QUICK_RECONNECT,
            on_action_result=self._on_action_result,
        )
        subscriber.subscribe(self._callback(group, member))
        return subscriber

    def decide(self, member: str, decision: str) -> None:
        """From now on `member` acks ("ack") or holds ("hold") what it receives."""
        self._decisions[member] = decision

    def _callback(self, group: str, member: str) -> Callable[[Message], None]:
        def on_message(message: Message) -> None:
            expires = message.lease_expires_at
            delivery = Delivery(
                group=group,
                member=member,
                delivery_id=message.delivery_id,
                notification_id=message.notification_id,
                payment_id=message.notification.payment_id,
                attempt=message.attempt,
                received=time.time(),
                lease_expires_at=expires.timestamp() if expires else 0.0,
                message=message,
            )
            with self._news:
                self.deliveries.append(delivery)
                self._by_id[delivery.delivery_id] = delivery
                self._news.notify_all()
            if self._decisions.get(member, "ack") == "ack":
                if self.ack_delay:
                    time.sleep(self.ack_delay)
                message.ack()

        return on_message

    def _on_action_result(self, result: hub_pb2.ActionResult) -> None:
        if result.kind != hub_pb2.ACTION_KIND_ACK:
            return
        with self._news:
            delivery = self._by_id.get(result.delivery_id)
            if delivery is not None:
                delivery.ack_status = result.status
                delivery.ack_confirmed = time.time()
            self._news.notify_all()

    # -- waiting --------------------------------------------------------------------------------

    def wait_for(self, condition: Callable[[Ledger], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._news:
            while not condition(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{what}: not within {timeout}s; {self.summary()}")
                self._news.wait(min(remaining, 0.1))

    # -- reading --------------------------------------------------------------------------------

    def of(self, group: str | None = None, member: str | None = None) -> list[Delivery]:
        with self._lock:
            return [
                d
                for d in self.deliveries
                if (group is None or d.group == group) and (member is None or d.member == member)
            ]

    def acked(self, group: str) -> set[str]:
        """Notification ids whose ack by `group` the hub confirmed OK."""
        return {
            d.notification_id for d in self.of(group) if d.ack_status == hub_pb2.ACTION_STATUS_OK
        }

    def acked_payment_ids(self, group: str) -> set[str]:
        return {d.payment_id for d in self.of(group) if d.ack_status == hub_pb2.ACTION_STATUS_OK}

    def duplicates_after_ack(self) -> list[tuple[Delivery, Delivery]]:
        """(the acked delivery, a later one of the same notification in the same group)."""
        found = []
        by_key: defaultdict[tuple[str, str], list[Delivery]] = defaultdict(list)
        for d in self.of():
            by_key[(d.group, d.notification_id)].append(d)
        for deliveries in by_key.values():
            for acked in deliveries:
                if acked.ack_status != hub_pb2.ACTION_STATUS_OK:
                    continue
                found += [
                    (acked, d) for d in deliveries if d is not acked and d.received > acked.received
                ]
        return found

    def redeliveries_before_ack(self) -> int:
        """Deliveries beyond the first of a (group, notification) that were not violations."""
        counts = Counter((d.group, d.notification_id) for d in self.of())
        extra = sum(n - 1 for n in counts.values())
        return extra - len(self.duplicates_after_ack())

    def summary(self) -> str:
        per_member = Counter(d.member for d in self.deliveries)
        return f"deliveries per member {dict(per_member)}"
