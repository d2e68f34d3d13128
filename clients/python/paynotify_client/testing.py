"""A fake for your own tests: feed your callback a message, see how it settled it. No hub needed.

::

    from paynotify_client.testing import FakeMessage, run_callback

    def test_books_a_successful_payment():
        message = FakeMessage.from_json({"notifyType": "PAYMENT_RESULT", "paymentId": "p1",
                                         "result": {"resultStatus": "S"}})
        outcome = run_callback(handle, message)
        assert outcome.acked

A callback that raises counts as nacked, exactly as in the real Subscriber (same code path). The
JSON is turned into a PaymentNotification only minimally (notifyType, ids, amounts, result, times,
paymentMethodType); the HTTP bridge has the full parser. `raw_json` is always the body you gave.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from paynotify.v1 import hub_pb2, notification_pb2
from paynotify_client.actions import Ack, Action, Extend, Nack, Reject
from paynotify_client.callback import Callback, invoke
from paynotify_client.message import Message

__all__ = ["FakeMessage", "Outcome", "notification_from_json", "run_callback"]

State = Literal["acked", "nacked", "rejected", "unsettled"]


@dataclass(frozen=True)
class Outcome:
    """How a message was settled: `state`, the nack `delay`, the reject `reason`, every `extend()`
    (seconds, None for the default), and the exception the callback raised, if it did.
    """

    state: State
    delay: float | None = None
    reason: str | None = None
    extensions: tuple[float | None, ...] = ()
    error: Exception | None = None

    @property
    def acked(self) -> bool:
        return self.state == "acked"

    @property
    def nacked(self) -> bool:
        return self.state == "nacked"

    @property
    def rejected(self) -> bool:
        return self.state == "rejected"

    @property
    def unsettled(self) -> bool:
        return self.state == "unsettled"


class FakeMessage(Message):
    """A Message that records what is done to it instead of telling a hub."""

    def __init__(self, delivery: hub_pb2.Delivery) -> None:
        self._actions: list[Action] = []
        self.error: Exception | None = None
        super().__init__(delivery, self._actions.append)

    @classmethod
    def from_json(
        cls, body: bytes | str | Mapping[str, Any], *, attempt: int = 1, alipay_send_count: int = 1
    ) -> FakeMessage:
        """A message carrying `body` (the notification as Alipay sends it) as delivery `attempt`."""
        raw = _raw_bytes(body)
        return cls.from_notification(
            notification_from_json(raw), attempt=attempt, alipay_send_count=alipay_send_count
        )

    @classmethod
    def from_notification(
        cls,
        notification: notification_pb2.PaymentNotification,
        *,
        attempt: int = 1,
        alipay_send_count: int = 1,
    ) -> FakeMessage:
        """A message carrying an already typed notification (its `raw_json` is used as is)."""
        delivery = hub_pb2.Delivery(
            delivery_id=f"fake-delivery-{uuid.uuid4().hex[:12]}",
            notification_id=f"fake-notification-{uuid.uuid4().hex[:12]}",
            notification=notification,
            raw_json=notification.raw_json,
            attempt=attempt,
            alipay_send_count=alipay_send_count,
        )
        now = datetime.now(UTC)
        delivery.first_received_at.FromDatetime(now)
        delivery.lease_expires_at.FromSeconds(int(now.timestamp()) + 30)
        return cls(delivery)

    @property
    def actions(self) -> tuple[Action, ...]:
        """Every action taken so far, in order (settlements after the first are not recorded)."""
        return tuple(self._actions)

    @property
    def outcome(self) -> Outcome:
        """How the message stands now (it may still be settled later, from another thread)."""
        extensions = tuple(a.seconds for a in self._actions if isinstance(a, Extend))
        for action in self._actions:
            if isinstance(action, Ack):
                return Outcome("acked", extensions=extensions, error=self.error)
            if isinstance(action, Nack):
                return Outcome(
                    "nacked", delay=action.delay, extensions=extensions, error=self.error
                )
            if isinstance(action, Reject):
                return Outcome(
                    "rejected", reason=action.reason, extensions=extensions, error=self.error
                )
        return Outcome("unsettled", extensions=extensions, error=self.error)


def run_callback(callback: Callback, message: FakeMessage, *, auto_ack: bool = False) -> Outcome:
    """Run `callback(message)` as the Subscriber would (a raise is logged and nacked) and return
    how the message was settled by the time it returned.
    """
    message.error = invoke(callback, message, auto_ack=auto_ack)
    return message.outcome


def _raw_bytes(body: bytes | str | Mapping[str, Any]) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def notification_from_json(
    body: bytes | str | Mapping[str, Any],
) -> notification_pb2.PaymentNotification:
    """A minimal PaymentNotification from an Alipay notification body, for tests only."""
    raw = _raw_bytes(body)
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("a notification body is a JSON object")
    notification = notification_pb2.PaymentNotification(
        notify_type_text=str(data.get("notifyType", "")),
        payment_request_id=str(data.get("paymentRequestId", "")),
        payment_id=str(data.get("paymentId", "")),
        payment_method_type=str(data.get("paymentMethodType", "")),
        raw_json=raw,
    )
    notification.notify_type = _enum_value(
        notification_pb2.NotifyType, "NOTIFY_TYPE_", notification.notify_type_text
    )
    _fill_result(notification, data.get("result"))
    for key, field in (
        ("paymentAmount", "payment_amount"),
        ("actualPaymentAmount", "actual_payment_amount"),
    ):
        _fill_amount(getattr(notification, field), data.get(key))
    for key, field in (
        ("paymentCreateTime", "payment_create_time"),
        ("paymentTime", "payment_time"),
    ):
        _fill_time(getattr(notification, field), data.get(key))
    return notification


def _enum_value(enum: Any, prefix: str, text: str) -> Any:
    try:
        return enum.Value(prefix + text.upper())
    except ValueError:
        return 0  # the UNSPECIFIED value


def _fill_result(notification: notification_pb2.PaymentNotification, result: object) -> None:
    if not isinstance(result, dict):
        return
    notification.result.result_code = str(result.get("resultCode", ""))
    notification.result.result_message = str(result.get("resultMessage", ""))
    notification.result.result_status = _enum_value(
        notification_pb2.ResultStatus, "RESULT_STATUS_", str(result.get("resultStatus", ""))
    )


def _fill_amount(amount: notification_pb2.Amount, data: object) -> None:
    if not isinstance(data, dict):
        return
    amount.currency = str(data.get("currency", ""))
    amount.value = str(data.get("value", ""))
    amount.minor_units = int(amount.value) if amount.value.isdigit() else 0


def _fill_time(target: notification_pb2.DateTime, text: object) -> None:
    if not isinstance(text, str):
        return
    target.text = text
    with contextlib.suppress(
        ValueError
    ):  # kept as text only; the bridge's parser is the strict one
        target.timestamp.FromDatetime(datetime.fromisoformat(text))
