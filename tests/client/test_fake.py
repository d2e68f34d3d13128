"""paynotify_client.testing: users test their callbacks without a hub."""

from __future__ import annotations

import json
import logging
import threading

import pytest

from paynotify.v1 import notification_pb2
from paynotify_client import Message
from paynotify_client.testing import FakeMessage, notification_from_json, run_callback

BODY = {
    "notifyType": "PAYMENT_RESULT",
    "result": {"resultCode": "SUCCESS", "resultStatus": "S", "resultMessage": "success"},
    "paymentRequestId": "pay-req-1",
    "paymentId": "2019112719074101000700000077771",
    "paymentAmount": {"currency": "USD", "value": "1000"},
    "paymentCreateTime": "2019-06-01T12:01:01+08:30",
    "paymentTime": "2019-06-01T12:01:01+08:30",
    "paymentMethodType": "ALIPAY_CN",
    "somethingNew": {"kept": True},
}


def test_from_json_types_the_essentials_and_keeps_the_body() -> None:
    message = FakeMessage.from_json(BODY, attempt=3, alipay_send_count=2)
    n = message.notification
    assert n.notify_type == notification_pb2.NOTIFY_TYPE_PAYMENT_RESULT
    assert n.notify_type_text == "PAYMENT_RESULT"
    assert n.result.result_status == notification_pb2.RESULT_STATUS_S
    assert n.result.result_code == "SUCCESS"
    assert (n.payment_request_id, n.payment_id) == ("pay-req-1", "2019112719074101000700000077771")
    assert (n.payment_amount.currency, n.payment_amount.value) == ("USD", "1000")
    assert n.payment_amount.minor_units == 1000
    assert n.payment_time.text == "2019-06-01T12:01:01+08:30"
    assert n.payment_time.timestamp.ToJsonString() == "2019-06-01T03:31:01Z"
    assert n.payment_method_type == "ALIPAY_CN"
    assert json.loads(message.raw_json)["somethingNew"] == {"kept": True}
    assert (message.attempt, message.alipay_send_count) == (3, 2)
    assert message.first_received_at is not None


def test_from_json_accepts_bytes_and_text_verbatim() -> None:
    raw = b'{"notifyType": "OFFLINE_PAYMENT_CODE",  "paymentRequestId": "r"}'
    assert FakeMessage.from_json(raw).raw_json == raw
    assert FakeMessage.from_json(raw.decode()).raw_json == raw
    unknown = notification_from_json('{"notifyType": "REFUND_RESULT"}')
    assert unknown.notify_type == notification_pb2.NOTIFY_TYPE_UNSPECIFIED
    assert unknown.notify_type_text == "REFUND_RESULT"


def test_each_message_has_its_own_delivery_id() -> None:
    assert FakeMessage.from_json(BODY).delivery_id != FakeMessage.from_json(BODY).delivery_id


def test_an_acking_callback_is_acked() -> None:
    outcome = run_callback(lambda m: m.ack(), FakeMessage.from_json(BODY))
    assert outcome.acked and not outcome.nacked and outcome.error is None


def test_nack_delay_and_reject_reason_are_reported() -> None:
    nacked = run_callback(lambda m: m.nack(120), FakeMessage.from_json(BODY))
    assert nacked.nacked and nacked.delay == 120
    rejected = run_callback(lambda m: m.reject("unknown merchant"), FakeMessage.from_json(BODY))
    assert rejected.rejected and rejected.reason == "unknown merchant"


def test_a_raising_callback_counts_as_nacked_and_is_logged_without_payload(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def callback(message: Message) -> None:
        raise RuntimeError("database down")

    message = FakeMessage.from_json(BODY)
    outcome = run_callback(callback, message)
    assert outcome.nacked and outcome.delay is None
    assert isinstance(outcome.error, RuntimeError)
    assert message.delivery_id in caplog.text
    assert "2019112719074101000700000077771" not in caplog.text


def test_a_callback_that_acked_then_raised_stays_acked() -> None:
    def callback(message: Message) -> None:
        message.ack()
        raise ValueError("after the fact")

    outcome = run_callback(callback, FakeMessage.from_json(BODY))
    assert outcome.acked
    assert isinstance(outcome.error, ValueError)


def test_returning_without_settling_leaves_it_unsettled_unless_auto_ack() -> None:
    assert run_callback(lambda m: None, FakeMessage.from_json(BODY)).unsettled
    assert run_callback(lambda m: None, FakeMessage.from_json(BODY), auto_ack=True).acked


def test_extensions_are_recorded_and_a_later_settlement_is_seen() -> None:
    message = FakeMessage.from_json(BODY)
    done = threading.Event()

    def callback(m: Message) -> None:
        m.extend(60)

        def later() -> None:
            m.ack()
            done.set()

        threading.Thread(target=later).start()

    outcome = run_callback(callback, message)
    assert outcome.extensions == (60,)
    assert done.wait(5)
    assert message.outcome.acked


def test_from_notification_uses_a_typed_notification() -> None:
    notification = notification_pb2.PaymentNotification(payment_id="p", raw_json=b"{}")
    message = FakeMessage.from_notification(notification, attempt=5)
    assert message.notification.payment_id == "p"
    assert message.raw_json == b"{}"
    assert message.attempt == 5


def test_a_body_that_is_not_an_object_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL)
    with pytest.raises(ValueError):
        FakeMessage.from_json("[1, 2]")
