"""Domain types of the hub: no gRPC, no SQL.

A notification is stored once per identity (notifyType + paymentId or paymentRequestId +
resultStatus) and fanned out to every declared group as one *delivery* per group. A delivery is
pending, leased to one member of the group, acknowledged, or dead (rejected or out of attempts,
payload kept).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "GROUP_NAME_PATTERN",
    "MAX_NOTIFICATION_ID",
    "ActionStatus",
    "AppendResult",
    "DeadLetter",
    "DeliveryEvent",
    "DeliveryRecord",
    "DeliveryState",
    "GroupDelivery",
    "GroupSpec",
    "GroupStats",
    "HistoryKind",
    "Lease",
    "NewNotification",
    "NotificationRecord",
    "ReceiptRecord",
    "RetryPolicy",
    "identity_of",
]

GROUP_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
# Both stores number notifications with signed 64-bit integers from 1: a bigger id names nothing
# (SQLite cannot even bind it; PostgreSQL refuses it as bigint).
MAX_NOTIFICATION_ID = 2**63 - 1


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    LEASED = "leased"
    ACKED = "acked"
    DEAD = "dead"

    @property
    def settled(self) -> bool:
        """Acked or dead: for Alipay's reply, a dead letter counts as received (DESIGN.md)."""
        return self in (DeliveryState.ACKED, DeliveryState.DEAD)


class ActionStatus(enum.StrEnum):
    OK = "ok"
    UNKNOWN = "unknown"
    STALE = "stale"


@dataclass(frozen=True)
class GroupSpec:
    """A subscriber group declared in the hub's configuration.

    `notify_types` empty means every type; otherwise only these notifyType texts are fanned out
    to it.
    """

    name: str
    required: bool = True
    notify_types: frozenset[str] = frozenset()

    def wants(self, notify_type: str) -> bool:
        return not self.notify_types or notify_type in self.notify_types


@dataclass(frozen=True)
class RetryPolicy:
    """Redelivery backoff after a nack, an expired lease or a dropped stream, and the attempt
    limit."""

    min_backoff: float = 1.0
    max_backoff: float = 600.0
    max_attempts: int = 20

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before the delivery after `attempt` (1-based): doubling, capped."""
        return float(min(self.max_backoff, self.min_backoff * 2 ** max(0, attempt - 1)))


def identity_of(
    notify_type: str, payment_id: str, payment_request_id: str, result_status: str
) -> str:
    """The deduplication key of a notification: never Request-Time or Signature (spec)."""
    return f"{notify_type}|{payment_id or payment_request_id}|{result_status}"


@dataclass(frozen=True)
class NewNotification:
    identity: str
    notify_type: str
    payment_request_id: str
    payment_id: str
    result_status: str
    # The serialized paynotify.v1.PaymentNotification (it holds the raw JSON body too).
    payload: bytes


@dataclass(frozen=True)
class ReceiptRecord:
    """One HTTP request from Alipay: every Publish is one."""

    received_at: float
    client_id: str = ""
    request_time: str = ""
    request_id: str = ""


@dataclass(frozen=True)
class GroupDelivery:
    state: DeliveryState
    attempts: int


@dataclass(frozen=True)
class AppendResult:
    notification_id: int
    created: bool
    send_count: int
    first_received_at: float
    groups: Mapping[str, GroupDelivery] = field(default_factory=dict)


@dataclass(frozen=True)
class Lease:
    """A delivery leased to one member: the member must ack, nack, reject or extend by `token`."""

    notification_id: int
    group: str
    token: str
    attempt: int
    lease_expires_at: float
    payload: bytes
    notify_type: str
    send_count: int
    first_received_at: float


# -- what an operator reads: statistics, one notification's whole story, dead letters ----------


class HistoryKind(enum.StrEnum):
    """What happened to a delivery. LEASED starts an attempt; the next event of the same group
    that is not LEASED or REPLAYED ends it."""

    LEASED = "leased"
    ACKED = "acked"
    NACKED = "nacked"
    REJECTED = "rejected"
    EXPIRED = "expired"
    RELEASED = "released"  # the member's stream ended while it held the lease
    REPLAYED = "replayed"  # an operator made it pending again, attempts reset

    @property
    def ends_attempt(self) -> bool:
        return self not in (HistoryKind.LEASED, HistoryKind.REPLAYED)


@dataclass(frozen=True)
class DeliveryEvent:
    """One row of a delivery's history, written in the transaction of the change it records.

    `attempt`: the attempt number the event belongs to (for REPLAYED, the attempts made before the
    reset). `state`: the delivery's state right after the event (a NACKED attempt out of attempts
    leaves it DEAD). `lease_expires_at`: for LEASED, the lease's first expiry. `due_at`: when it
    became PENDING, the time it is due again. `detail`: a reject or dead-letter reason, or a replay
    note; "" when none.
    """

    group: str
    kind: HistoryKind
    at: float
    attempt: int
    member: str
    state: DeliveryState
    lease_expires_at: float | None = None
    due_at: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class DeliveryRecord:
    """One group's delivery of a notification, now and in the past (`history`, oldest first).

    `lease_member` and `lease_expires_at` describe the current lease: set only while LEASED.
    """

    group: str
    state: DeliveryState
    attempts: int
    available_at: float
    lease_member: str = ""
    lease_expires_at: float | None = None
    acked_at: float | None = None
    dead_at: float | None = None
    dead_reason: str = ""
    history: tuple[DeliveryEvent, ...] = ()


@dataclass(frozen=True)
class NotificationRecord:
    """Everything the store knows about one notification: receipts and deliveries oldest first."""

    notification_id: int
    identity: str
    notify_type: str
    payment_request_id: str
    payment_id: str
    result_status: str
    send_count: int
    first_received_at: float
    last_received_at: float
    payload: bytes
    receipts: tuple[ReceiptRecord, ...] = ()
    deliveries: tuple[DeliveryRecord, ...] = ()


@dataclass(frozen=True)
class GroupStats:
    """One group's deliveries by state at `now`.

    `pending_due` can be claimed now, `pending_later` waits for its backoff. `acked` counts acked
    deliveries still stored (the retention window); None when not counted. `oldest_unacked_at` is
    the first receipt of the oldest pending or leased delivery (dead letters are counted apart);
    None when there is none.
    """

    group: str
    pending_due: int = 0
    pending_later: int = 0
    leased: int = 0
    dead: int = 0
    acked: int | None = None
    oldest_unacked_at: float | None = None

    @property
    def pending(self) -> int:
        return self.pending_due + self.pending_later

    def oldest_unacked_age(self, now: float) -> float | None:
        """Seconds since the oldest unacknowledged delivery's first receipt (never negative)."""
        return None if self.oldest_unacked_at is None else max(0.0, now - self.oldest_unacked_at)


@dataclass(frozen=True)
class DeadLetter:
    """A delivery parked as dead: rejected by a member (its reason) or out of attempts."""

    notification_id: int
    group: str
    notify_type: str
    payment_request_id: str
    payment_id: str
    attempts: int
    reason: str
    dead_at: float
    first_received_at: float
    payload: bytes
