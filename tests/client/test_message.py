"""Message: what it exposes, first settlement wins, and a repr without customer data."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from paynotify.v1 import hub_pb2, notification_pb2
from paynotify_client import Ack, Action, Extend, Message, Nack, Reject


def _delivery() -> hub_pb2.Delivery:
    notification = notification_pb2.PaymentNotification(
        notify_type=notification_pb2.NOTIFY_TYPE_PAYMENT_RESULT,
        notify_type_text="PAYMENT_RESULT",
        payment_id="2019112719074101000700000077771",
        raw_json=b'{"notifyType":"PAYMENT_RESULT"}',
    )
    notification.psp_customer_info.psp_customer_id = "2088-secret-customer"
    delivery = hub_pb2.Delivery(
        delivery_id="d-1",
        notification_id="n-1",
        notification=notification,
        raw_json=notification.raw_json,
        attempt=2,
        alipay_send_count=3,
    )
    delivery.first_received_at.FromDatetime(datetime(2024, 5, 1, 12, 0, tzinfo=UTC))
    delivery.lease_expires_at.FromDatetime(datetime(2024, 5, 1, 12, 0, 30, tzinfo=UTC))
    return delivery


def _message() -> tuple[Message, list[Action]]:
    sent: list[Action] = []
    return Message(_delivery(), sent.append), sent


def test_properties_come_from_the_delivery() -> None:
    message, _ = _message()
    assert message.delivery_id == "d-1"
    assert message.notification_id == "n-1"
    assert message.notification.payment_id == "2019112719074101000700000077771"
    assert message.raw_json == b'{"notifyType":"PAYMENT_RESULT"}'
    assert (message.attempt, message.alipay_send_count) == (2, 3)
    assert message.first_received_at == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert message.lease_expires_at == datetime(2024, 5, 1, 12, 0, 30, tzinfo=UTC)


def test_unset_times_are_none() -> None:
    message = Message(hub_pb2.Delivery(delivery_id="x"), lambda action: None)
    assert message.first_received_at is None
    assert message.lease_expires_at is None


@pytest.mark.parametrize(
    ("settle", "expected"),
    [
        (lambda m: m.ack(), Ack("d-1")),
        (lambda m: m.nack(), Nack("d-1", None)),
        (lambda m: m.nack(5), Nack("d-1", 5)),
        (lambda m: m.reject("unknown currency"), Reject("d-1", "unknown currency")),
    ],
)
def test_each_verb_enqueues_its_action(settle: object, expected: Action) -> None:
    message, sent = _message()
    settle(message)  # type: ignore[operator]
    assert sent == [expected]
    assert message.settled


def test_second_settlement_is_ignored_and_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    message, sent = _message()
    caplog.set_level(logging.DEBUG, logger="paynotify_client.message")
    message.ack()
    message.nack()
    message.reject("late")
    message.extend()
    assert sent == [Ack("d-1")]
    assert "already settled" in caplog.text


def test_extend_does_not_settle_and_may_repeat() -> None:
    message, sent = _message()
    message.extend(60)
    message.extend()
    message.ack()
    assert sent == [Extend("d-1", 60), Extend("d-1", None), Ack("d-1")]


def test_bad_arguments_are_refused() -> None:
    message, sent = _message()
    with pytest.raises(ValueError):
        message.nack(-1)
    with pytest.raises(ValueError):
        message.extend(0)
    assert sent == []
    assert not message.settled


def test_repr_names_the_delivery_without_customer_data() -> None:
    message, _ = _message()
    text = repr(message)
    assert "d-1" in text and "PAYMENT_RESULT" in text and "attempt=2" in text
    assert "2088-secret-customer" not in text
    assert "2019112719074101000700000077771" not in text
