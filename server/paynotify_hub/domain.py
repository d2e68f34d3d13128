"""Domain types of the hub: no gRPC, no SQL.

A notification is stored once per identity (notifyType + paymentId or paymentRequestId + resultStatus)
and fanned out to every declared group as one *delivery* per group. A delivery is pending, leased to one
member of the group, acknowledged, or dead (rejected or out of attempts, payload kept).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "GROUP_NAME_PATTERN",
    "ActionStatus",
    "AppendResult",
    "DeliveryState",
    "GroupDelivery",
    "GroupSpec",
    "Lease",
    "NewNotification",
    "ReceiptRecord",
    "RetryPolicy",
    "identity_of",
]

GROUP_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


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

    `notify_types` empty means every type; otherwise only these notifyType texts are fanned out to it.
    """

    name: str
    required: bool = True
    notify_types: frozenset[str] = frozenset()

    def wants(self, notify_type: str) -> bool:
        return not self.notify_types or notify_type in self.notify_types


@dataclass(frozen=True)
class RetryPolicy:
    """Redelivery backoff after a nack, an expired lease or a dropped stream, and the attempt limit."""

    min_backoff: float = 1.0
    max_backoff: float = 600.0
    max_attempts: int = 20

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before the delivery after `attempt` (1-based): doubling, capped."""
        return float(min(self.max_backoff, self.min_backoff * 2 ** max(0, attempt - 1)))


def identity_of(notify_type: str, payment_id: str, payment_request_id: str, result_status: str) -> str:
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
