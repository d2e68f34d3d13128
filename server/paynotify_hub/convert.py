"""paynotify.v1 messages <-> the hub's domain types, and validation of Publish input."""

from __future__ import annotations

import re
from collections.abc import Iterable

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from paynotify.v1 import hub_pb2, notification_pb2
from paynotify_hub.domain import (
    DeliveryState,
    Lease,
    NewNotification,
    ReceiptRecord,
    identity_of,
)
from paynotify_hub.errors import InvalidArgument
from paynotify_hub.member import MemberSettings, format_delivery_id
from paynotify_hub.publishing import PublishOutcome, PublishResult

__all__ = [
    "MAX_ID_CHARS",
    "duration_or_none",
    "fill_delivery",
    "new_notification",
    "notify_type_texts",
    "opened_of",
    "publish_response",
    "publish_response_rejected",
    "receipt_of",
    "result_status_letter",
    "seconds_of",
    "validate_publish",
]

MAX_ID_CHARS = 64
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_RESULT_STATUSES = frozenset(notification_pb2.ResultStatus.values())
# google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799
_NOTIFY_TYPE_PREFIX = "NOTIFY_TYPE_"
_RESULT_STATUS_PREFIX = "RESULT_STATUS_"

_OUTCOMES = {
    PublishOutcome.ACKNOWLEDGED: hub_pb2.PUBLISH_OUTCOME_ACKNOWLEDGED,
    PublishOutcome.ALREADY_ACKNOWLEDGED: hub_pb2.PUBLISH_OUTCOME_ALREADY_ACKNOWLEDGED,
    PublishOutcome.PENDING: hub_pb2.PUBLISH_OUTCOME_PENDING,
}
_STATES = {
    DeliveryState.PENDING: hub_pb2.DELIVERY_STATE_PENDING,
    DeliveryState.LEASED: hub_pb2.DELIVERY_STATE_LEASED,
    DeliveryState.ACKED: hub_pb2.DELIVERY_STATE_ACKED,
    DeliveryState.DEAD: hub_pb2.DELIVERY_STATE_DEAD,
}


def validate_publish(request: hub_pb2.PublishRequest, max_bytes: int) -> str | None:
    """Why the request cannot be stored, or None when it can. Checks only what identity and
    redelivery need: the bridge parsed and verified the body."""
    if not request.HasField("notification"):
        return "notification is missing"
    n = request.notification
    if not n.notify_type_text:
        return "notification.notify_type_text is empty"
    if not n.payment_id and not n.payment_request_id:
        return "notification has neither payment_id nor payment_request_id"
    for name in ("payment_id", "payment_request_id", "notify_type_text"):
        value = getattr(n, name)
        if len(value) > MAX_ID_CHARS:
            return f"notification.{name} is longer than {MAX_ID_CHARS} characters"
        if _CONTROL.search(value):
            # Part of the identity; PostgreSQL text cannot even hold a NUL.
            return f"notification.{name} contains a control character"
    if not n.raw_json:
        return "notification.raw_json is empty: the body as Alipay sent it is required"
    if n.HasField("result") and n.result.result_status not in _RESULT_STATUSES:
        return f"notification.result.result_status {n.result.result_status} is not a ResultStatus"
    if request.receipt.HasField("received_at") and not _valid_timestamp(
        request.receipt.received_at
    ):
        return (
            "receipt.received_at is not a valid timestamp (years 1 to 9999, nanos 0 to 999999999)"
        )
    size = n.ByteSize()
    if size > max_bytes:
        return f"notification is {size} bytes, more than the limit of {max_bytes}"
    return None


def result_status_letter(n: notification_pb2.PaymentNotification) -> str:
    """ "S", "F", "U", or "" when the notification carries no result (some in-store ones)."""
    if (
        not n.HasField("result")
        or n.result.result_status == notification_pb2.RESULT_STATUS_UNSPECIFIED
    ):
        return ""
    name = notification_pb2.ResultStatus.Name(n.result.result_status)
    return name.removeprefix(_RESULT_STATUS_PREFIX)


def new_notification(n: notification_pb2.PaymentNotification) -> NewNotification:
    status = result_status_letter(n)
    return NewNotification(
        identity=identity_of(n.notify_type_text, n.payment_id, n.payment_request_id, status),
        notify_type=n.notify_type_text,
        payment_request_id=n.payment_request_id,
        payment_id=n.payment_id,
        result_status=status,
        payload=n.SerializeToString(),
    )


def receipt_of(request: hub_pb2.PublishRequest, now: float) -> ReceiptRecord:
    r = request.receipt
    received_at = now
    if request.HasField("receipt") and r.HasField("received_at"):
        received_at = r.received_at.ToNanoseconds() / 1e9
    return ReceiptRecord(
        received_at=received_at,
        client_id=_storable(r.client_id[: MAX_ID_CHARS * 2]),
        request_time=_storable(r.request_time[:MAX_ID_CHARS]),
        request_id=_storable(r.request_id[: MAX_ID_CHARS * 2]),
    )


def _storable(text: str) -> str:
    """Informational text as every store can hold it (PostgreSQL text cannot hold NUL)."""
    return text.replace("\x00", "\ufffd")


def _valid_timestamp(t: Timestamp) -> bool:
    return _MIN_SECONDS <= t.seconds <= _MAX_SECONDS and 0 <= t.nanos <= 999_999_999


def publish_response(result: PublishResult) -> hub_pb2.PublishResponse:
    return hub_pb2.PublishResponse(
        outcome=_OUTCOMES[result.outcome],
        notification_id=str(result.notification_id),
        alipay_send_count=result.send_count,
        groups=[
            hub_pb2.GroupStatus(
                group=g.group, required=g.required, state=_STATES[g.state], attempts=g.attempts
            )
            for g in result.groups
        ],
    )


def publish_response_rejected(detail: str) -> hub_pb2.PublishResponse:
    return hub_pb2.PublishResponse(outcome=hub_pb2.PUBLISH_OUTCOME_REJECTED, detail=detail)


def notify_type_texts(types: Iterable[int]) -> frozenset[str]:
    """Open.notify_types as the notifyType texts the store filters on."""
    texts = set()
    for value in types:
        if value == notification_pb2.NOTIFY_TYPE_UNSPECIFIED:
            raise InvalidArgument("open.notify_types must not contain NOTIFY_TYPE_UNSPECIFIED")
        try:
            name = notification_pb2.NotifyType.Name(value)  # type: ignore[arg-type]
        except ValueError:
            raise InvalidArgument(f"open.notify_types has an unknown value {value}") from None
        texts.add(name.removeprefix(_NOTIFY_TYPE_PREFIX))
    return frozenset(texts)


def seconds_of(duration: Duration) -> float:
    return duration.seconds + duration.nanos / 1e9


def duration_or_none(message: object, field: str) -> float | None:
    """The Duration field `field` of `message` in seconds, or None when unset."""
    if not message.HasField(field):  # type: ignore[attr-defined]
        return None
    value: Duration = getattr(message, field)
    return seconds_of(value)


def _duration(seconds: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def _timestamp(seconds: float) -> Timestamp:
    t = Timestamp()
    t.FromNanoseconds(round(seconds * 1e9))
    return t


def fill_delivery(delivery: hub_pb2.Delivery, lease: Lease) -> None:
    """Write `lease` into the empty `delivery`, in place: a Delivery built from keyword arguments
    and then added to a response is copied twice, which costs more than the rest of the hub's
    work on it."""
    delivery.delivery_id = format_delivery_id(lease.notification_id, lease.token)
    delivery.notification_id = str(lease.notification_id)
    notification = delivery.notification
    notification.MergeFromString(lease.payload)
    delivery.raw_json = notification.raw_json
    delivery.attempt = lease.attempt
    delivery.alipay_send_count = lease.send_count
    delivery.first_received_at.FromNanoseconds(round(lease.first_received_at * 1e9))
    delivery.lease_expires_at.FromNanoseconds(round(lease.lease_expires_at * 1e9))


def opened_of(member_id: str, settings: MemberSettings) -> hub_pb2.Opened:
    return hub_pb2.Opened(
        group=settings.group.name,
        member_id=member_id,
        max_in_flight=settings.max_in_flight,
        ack_deadline=_duration(settings.ack_deadline),
    )
