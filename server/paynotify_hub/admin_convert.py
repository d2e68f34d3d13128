"""paynotify.v1.HubAdmin messages from the admin domain's records (and back for requests)."""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from paynotify.v1 import admin_pb2, hub_pb2, notification_pb2
from paynotify_hub.admin import Attempt, GroupStatus, MemberView, attempts_of
from paynotify_hub.domain import (
    DeadLetter,
    DeliveryEvent,
    DeliveryRecord,
    DeliveryState,
    HistoryKind,
    NotificationRecord,
    ReceiptRecord,
)

__all__ = [
    "dead_letter_message",
    "notification_detail",
    "seconds_of_timestamp",
    "status_response",
]

_STATES = {
    DeliveryState.PENDING: hub_pb2.DELIVERY_STATE_PENDING,
    DeliveryState.LEASED: hub_pb2.DELIVERY_STATE_LEASED,
    DeliveryState.ACKED: hub_pb2.DELIVERY_STATE_ACKED,
    DeliveryState.DEAD: hub_pb2.DELIVERY_STATE_DEAD,
}
_KINDS = {
    HistoryKind.LEASED: admin_pb2.HISTORY_KIND_LEASED,
    HistoryKind.ACKED: admin_pb2.HISTORY_KIND_ACKED,
    HistoryKind.NACKED: admin_pb2.HISTORY_KIND_NACKED,
    HistoryKind.REJECTED: admin_pb2.HISTORY_KIND_REJECTED,
    HistoryKind.EXPIRED: admin_pb2.HISTORY_KIND_EXPIRED,
    HistoryKind.RELEASED: admin_pb2.HISTORY_KIND_RELEASED,
    HistoryKind.REPLAYED: admin_pb2.HISTORY_KIND_REPLAYED,
}


def _timestamp(seconds: float | None) -> Timestamp | None:
    """None stays None, so the field stays unset."""
    if seconds is None:
        return None
    t = Timestamp()
    t.FromNanoseconds(round(seconds * 1e9))
    return t


def _duration(seconds: float | None) -> Duration | None:
    if seconds is None:
        return None
    d = Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def seconds_of_timestamp(t: Timestamp) -> float:
    return t.seconds + t.nanos / 1e9


def _notification(payload: bytes) -> notification_pb2.PaymentNotification:
    """The stored payload; an unreadable one shows as empty rather than failing the whole call."""
    try:
        return notification_pb2.PaymentNotification.FromString(payload)
    except DecodeError:
        return notification_pb2.PaymentNotification()


def status_response(
    now: float, hub_id: str, groups: Iterable[GroupStatus]
) -> admin_pb2.StatusResponse:
    return admin_pb2.StatusResponse(
        now=_timestamp(now), hub_id=hub_id, groups=[_group_stats(now, g) for g in groups]
    )


def _group_stats(now: float, g: GroupStatus) -> admin_pb2.GroupStats:
    s = g.stats
    return admin_pb2.GroupStats(
        group=g.spec.name,
        required=g.spec.required,
        notify_types=sorted(g.spec.notify_types),
        pending=s.pending,
        pending_due=s.pending_due,
        pending_backoff=s.pending_later,
        in_flight=s.leased,
        dead_letters=s.dead,
        acknowledged=s.acked or 0,
        oldest_unacked_received_at=_timestamp(s.oldest_unacked_at),
        oldest_unacked_age=_duration(s.oldest_unacked_age(now)),
        connected_members=g.connected,
        members=[_member(m) for m in g.members],
    )


def _member(m: MemberView) -> admin_pb2.ConnectedMember:
    return admin_pb2.ConnectedMember(
        member_id=m.member_id,
        client_id=m.client_id,
        in_flight=m.in_flight,
        max_in_flight=m.max_in_flight,
        ack_deadline=_duration(m.ack_deadline),
    )


def notification_detail(r: NotificationRecord) -> admin_pb2.NotificationDetail:
    return admin_pb2.NotificationDetail(
        notification_id=str(r.notification_id),
        identity=r.identity,
        notification=_notification(r.payload),
        alipay_send_count=r.send_count,
        first_received_at=_timestamp(r.first_received_at),
        last_received_at=_timestamp(r.last_received_at),
        receipts=[_receipt(x) for x in r.receipts],
        deliveries=[_delivery(d) for d in r.deliveries],
    )


def _receipt(r: ReceiptRecord) -> hub_pb2.Receipt:
    return hub_pb2.Receipt(
        received_at=_timestamp(r.received_at),
        client_id=r.client_id,
        request_time=r.request_time,
        request_id=r.request_id,
    )


def _delivery(d: DeliveryRecord) -> admin_pb2.DeliveryDetail:
    return admin_pb2.DeliveryDetail(
        group=d.group,
        state=_STATES[d.state],
        attempts=d.attempts,
        due_at=_timestamp(d.available_at if d.state is DeliveryState.PENDING else None),
        lease_member_id=d.lease_member,
        lease_expires_at=_timestamp(d.lease_expires_at),
        acked_at=_timestamp(d.acked_at),
        dead_at=_timestamp(d.dead_at),
        dead_reason=d.dead_reason,
        attempt_history=[_attempt(a) for a in attempts_of(d.history)],
        history=[_event(e) for e in d.history],
    )


def _attempt(a: Attempt) -> admin_pb2.Attempt:
    return admin_pb2.Attempt(
        attempt=a.attempt,
        member_id=a.member,
        leased_at=_timestamp(a.leased_at),
        lease_expires_at=_timestamp(a.lease_expires_at),
        outcome=_KINDS[a.outcome] if a.outcome else admin_pb2.HISTORY_KIND_UNSPECIFIED,
        ended_at=_timestamp(a.ended_at),
        duration=_duration(a.duration),
        state_after=_STATES[a.state_after],
        detail=a.detail,
    )


def _event(e: DeliveryEvent) -> admin_pb2.HistoryEvent:
    return admin_pb2.HistoryEvent(
        kind=_KINDS[e.kind],
        at=_timestamp(e.at),
        attempt=e.attempt,
        member_id=e.member,
        state=_STATES[e.state],
        lease_expires_at=_timestamp(e.lease_expires_at),
        due_at=_timestamp(e.due_at),
        detail=e.detail,
    )


def dead_letter_message(d: DeadLetter) -> admin_pb2.DeadLetter:
    return admin_pb2.DeadLetter(
        notification_id=str(d.notification_id),
        group=d.group,
        notification=_notification(d.payload),
        reason=d.reason,
        attempts=d.attempts,
        dead_at=_timestamp(d.dead_at),
        first_received_at=_timestamp(d.first_received_at),
    )
