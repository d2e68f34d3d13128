"""`paynotify tail`: its flags and the JSON line it prints."""

from __future__ import annotations

import argparse
import io
import json
import threading

import pytest

from paynotify_client import tail
from paynotify_client.testing import FakeMessage

BODY = {
    "notifyType": "PAYMENT_RESULT",
    "result": {"resultCode": "SUCCESS", "resultStatus": "S", "resultMessage": "success"},
    "paymentId": "p-1",
    "paymentAmount": {"currency": "USD", "value": "100"},
}


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    tail.add_arguments(parser)
    return parser.parse_args(argv)


def test_flags_and_defaults() -> None:
    args = _parse("--group", "billing")
    assert args.hub == "127.0.0.1:50051"
    assert (args.count, args.no_ack, args.notify_type) == (0, False, [])
    args = _parse(
        "--group", "ops", "--hub", "h:1", "--count", "2", "--no-ack", "--notify-type", "X"
    )
    assert (args.hub, args.count, args.no_ack, args.notify_type) == ("h:1", 2, True, ["X"])


def test_one_json_line_with_the_typed_notification_and_the_raw_body() -> None:
    message = FakeMessage.from_json(BODY, attempt=2)
    line = tail.message_to_json(message)
    assert "\n" not in line
    data = json.loads(line)
    assert data["delivery_id"] == message.delivery_id
    assert data["notification_id"] == message.notification_id
    assert (data["attempt"], data["alipay_send_count"]) == (2, 1)
    assert data["notification"]["notify_type"] == "NOTIFY_TYPE_PAYMENT_RESULT"
    assert data["notification"]["payment_amount"]["value"] == "100"
    assert "raw_json" not in data["notification"]
    assert json.loads(data["raw_json"]) == BODY
    assert data["first_received_at"].endswith("+00:00")


def test_printer_acks_after_printing_and_hands_back_extras() -> None:
    out, done = io.StringIO(), threading.Event()
    printer = tail._Printer(out, count=1, ack=True, done=done)
    first, second = FakeMessage.from_json(BODY), FakeMessage.from_json(BODY)
    printer(first)
    printer(second)
    assert first.outcome.acked
    assert second.outcome.nacked and second.outcome.delay == 0
    assert done.is_set()
    assert len(out.getvalue().splitlines()) == 1


def test_printer_without_ack_leaves_messages_leased() -> None:
    printer = tail._Printer(io.StringIO(), count=0, ack=False, done=threading.Event())
    message = FakeMessage.from_json(BODY)
    printer(message)
    assert message.outcome.unsettled


def test_bad_settings_exit_2_before_connecting(capsys: pytest.CaptureFixture[str]) -> None:
    assert tail.run(_parse("--group", "billing", "--notify-type", "REFUND_RESULT")) == 2
    assert tail.run(_parse("--group", "Not A Group")) == 2
    assert "paynotify tail:" in capsys.readouterr().err
