"""End to end: Alipay's signed POST -> bridge -> hub -> subscriber (the client library) -> ack ->
SUCCESS, and every way that must not end in SUCCESS. Real waitress, real hub, real processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from paynotify.v1 import notification_pb2 as pb
from paynotify_bridge.cli import LISTENING_PREFIX
from paynotify_bridge.parse import parse_notification
from paynotify_bridge.simulator import with_overrides
from paynotify_cli.main import main
from paynotify_client import Message
from tests.bridge.conftest import (
    CLIENT_ID,
    NOTIFY_PATH,
    SAMPLE_NAMES,
    SOON,
    SUCCESS_BODY,
    BridgeFactory,
    Keys,
    sample_body,
    store_counts,
    subscribed,
)
from tests.hubkit import ThreadedHub, hub_process


def _instant(text: str) -> int:
    ts = Timestamp()
    ts.FromJsonString(text)
    return ts.seconds


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_every_sample_reaches_the_subscriber_intact(
    name: str, make_bridge: BridgeFactory, hub: ThreadedHub
) -> None:
    body = sample_body(name)
    bridge = make_bridge(hub.address)
    with subscribed(hub.address) as subscriber:
        reply = bridge.notify(body)
        message = subscriber.next()
    assert reply.status == 200
    assert reply.body == SUCCESS_BODY
    assert message.raw_json == body  # byte for byte, trailing newline included
    assert message.notification.raw_json == body
    assert message.notification == parse_notification(body)
    assert (message.attempt, message.alipay_send_count) == (1, 1)
    CHECKS[name](message.notification)


def _check_success(n: pb.PaymentNotification) -> None:
    assert n.notify_type == pb.NOTIFY_TYPE_PAYMENT_RESULT
    assert (n.result.result_code, n.result.result_status) == ("SUCCESS", pb.RESULT_STATUS_S)
    assert (n.payment_request_id, n.payment_id) == ("paymentRequestId01", "2020010123456789XXXX")
    assert (n.payment_amount.currency, n.payment_amount.value) == ("HKD", "100")
    assert n.payment_amount.minor_units == 100
    assert n.payment_create_time.text == "2020-01-01T12:01:00+08:30"
    assert n.payment_create_time.timestamp.seconds == _instant("2020-01-01T03:31:00Z")
    assert n.payment_time.text == "2020-01-01T12:01:01+08:30"


def _check_failed(n: pb.PaymentNotification) -> None:
    assert n.result.result_status == pb.RESULT_STATUS_F
    assert n.result.result_code == "USER_BALANCE_NOT_ENOUGH"
    assert n.result.result_message == "user balance not enough"
    assert (n.payment_amount.currency, n.payment_amount.value) == ("EUR", "8000")
    assert not n.HasField("payment_time")


def _check_instore_fx(n: pb.PaymentNotification) -> None:
    assert (n.payment_amount.currency, n.payment_amount.value) == ("JPY", "200")
    assert (n.actual_payment_amount.currency, n.actual_payment_amount.value) == ("CNY", "1292")
    assert n.payment_quote.quote_currency_pair == "392/156"
    assert n.payment_quote.quote_price == "0.064622"  # a JSON number, kept as its exact text
    assert n.payment_quote.HasField("guaranteed") and n.payment_quote.guaranteed is False
    info = n.psp_customer_info
    assert (info.psp_name, info.psp_customer_id) == ("ALIPAYCN", "20885028136924G7")
    assert info.display_customer_id == "buy*@alitest.com"
    assert n.payment_time.text == "2020-03-02T19:12:11-08:00"
    assert n.payment_time.timestamp.seconds == _instant("2020-03-03T03:12:11Z")
    assert n.result.result_message == "success."


def _check_offline_payment_code(n: pb.PaymentNotification) -> None:
    assert n.notify_type == pb.NOTIFY_TYPE_OFFLINE_PAYMENT_CODE
    assert n.notify_type_text == "OFFLINE_PAYMENT_CODE"
    assert not n.HasField("result")
    assert n.payment_action_form == (
        '{"paymentActionFormType":"PaymentCodeForm","paymentCode":"2810000000000000"}'
    )
    assert (n.payment_amount.currency, n.payment_amount.value) == ("USD", "1000")


CHECKS = {
    "payment_result_success": _check_success,
    "payment_result_failed": _check_failed,
    "payment_result_instore_fx": _check_instore_fx,
    "offline_payment_code": _check_offline_payment_code,
}


def test_unacknowledged_is_503_then_alipays_retry_gets_success_once(
    make_bridge: BridgeFactory, hub: ThreadedHub
) -> None:
    bridge = make_bridge(hub.address, publish_timeout=1.0)
    body = sample_body("payment_result_success")

    started = time.monotonic()
    first = bridge.notify(body)  # nobody subscribed: stored, not acknowledged
    elapsed = time.monotonic() - started
    assert first.status == 503
    assert first.result["resultStatus"] == "U"
    assert first.body != SUCCESS_BODY
    assert elapsed < bridge.config.publish_timeout + 2.0  # bounded by the publish timeout

    with subscribed(hub.address) as subscriber:
        message = subscriber.next()  # the stored notification reaches the group once it connects
        assert message.raw_json == body
        second = bridge.notify(body)  # Alipay's next retry
        assert second.status == 200
        assert second.body == SUCCESS_BODY
        subscriber.assert_nothing(within=1.0)  # not delivered a second time
    assert store_counts(hub) == (1, 2)  # one notification, two sends
    assert bridge.metric("paynotify_bridge_requests_total", outcome="pending") == 1
    assert bridge.metric("paynotify_bridge_requests_total", outcome="success") == 1


def _fail_three_times(message: Message, nth: int) -> str:
    return "ack" if nth >= 4 else "nack"


def test_retry_story_with_the_simulator(
    make_bridge: BridgeFactory,
    hub: ThreadedHub,
    alipay_keys: Keys,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A subscriber fails three deliveries and acks the fourth; Alipay (the simulator, on a schedule
    compressed 3600 times) retries until SUCCESS, then stops."""
    bridge = make_bridge(hub.address, publish_timeout=0.5)
    with subscribed(hub.address, decide=_fail_three_times) as subscriber:
        code = main(
            [
                "send-test",
                "--url", bridge.base + NOTIFY_PATH,
                "--private-key", str(alipay_keys.private_path),
                "--client-id", CLIENT_ID,
                "--sample", "payment_result_success",
                "--retries",
                "--time-scale", "3600",
            ]
        )  # fmt: skip
        lines = capsys.readouterr().out.splitlines()
        subscriber.assert_total(4, settle=1.0)
    assert code == 0
    assert len(lines) >= 2  # the first send cannot succeed: the first delivery is nacked
    *failures, success = lines
    assert all(re.match(r"attempt \d+: HTTP 503 .*\"resultStatus\":\"U\"", f) for f in failures)
    assert success == f"attempt {len(lines)}: HTTP 200 {SUCCESS_BODY.decode()}"
    assert [m.attempt for m in subscriber.seen] == [1, 2, 3, 4]
    # Alipay stopped after SUCCESS: every send the simulator printed reached the hub, no more.
    assert store_counts(hub) == (1, len(lines))
    assert subscriber.seen[-1].alipay_send_count <= len(lines)


def test_hub_unreachable_is_503_u(make_bridge: BridgeFactory, dead_hub_address: str) -> None:
    bridge = make_bridge(dead_hub_address, publish_timeout=2.0)
    started = time.monotonic()
    reply = bridge.notify(sample_body("payment_result_success"))
    assert time.monotonic() - started < bridge.config.publish_timeout + 2.0
    assert reply.status == 503
    assert reply.result["resultStatus"] == "U"
    assert reply.body != SUCCESS_BODY
    assert bridge.metric("paynotify_bridge_requests_total", outcome="hub_unavailable") == 1
    assert bridge.get("/readyz").status == 503


def test_a_dead_hub_among_several_is_skipped(
    make_bridge: BridgeFactory, hub: ThreadedHub, dead_hub_address: str
) -> None:
    bridge = make_bridge([dead_hub_address, hub.address])
    body = sample_body("payment_result_success")
    with subscribed(hub.address):
        replies = [
            bridge.notify(with_overrides(body, {"paymentId": f"FAILOVER-{i}"})) for i in range(6)
        ]
    assert [r.status for r in replies] == [200] * 6
    assert bridge.get("/readyz").status == 200


# -- the commands as processes ------------------------------------------------------------------


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PAYNOTIFY_")}


def _paynotify(*args: str) -> list[str]:
    return [sys.executable, "-m", "paynotify_cli.main", *args]


@pytest.fixture
def bridge_process(
    hub: ThreadedHub, alipay_keys: Keys, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    args = _paynotify(
        "bridge", "--listen", "127.0.0.1:0", "--hub", hub.address,
        "--alipay-public-key", f"1={alipay_keys.public_path}", "--client-id", CLIENT_ID,
        "--publish-timeout", "2",
    )  # fmt: skip
    stderr = (tmp_path / "bridge.err").open("w")
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=stderr, text=True, env=_env())
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # bounded: the process exits on a startup error
        match = re.fullmatch(re.escape(LISTENING_PREFIX) + r" (http://127\.0\.0\.1:\d+)\n", line)
        assert match, f"no listening line: {line!r}; {(tmp_path / 'bridge.err').read_text()}"
        yield process, match.group(1)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(SOON)
        stderr.close()


def test_bridge_and_send_test_commands(
    bridge_process: tuple[subprocess.Popen[str], str], hub: ThreadedHub, alipay_keys: Keys
) -> None:
    process, url = bridge_process
    send_test = _paynotify(
        "send-test", "--url", url + NOTIFY_PATH, "--private-key", str(alipay_keys.private_path),
        "--client-id", CLIENT_ID, "--sample", "offline_payment_code",
    )  # fmt: skip
    with subscribed(hub.address) as subscriber:
        sent = subprocess.run(send_test, capture_output=True, text=True, timeout=60, env=_env())
        assert subscriber.next().raw_json == sample_body("offline_payment_code")
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout == f"attempt 1: HTTP 200 {SUCCESS_BODY.decode()}\n"

    process.send_signal(signal.SIGTERM)
    assert process.wait(SOON) == 0


def test_bridge_command_refuses_a_missing_key_file(tmp_path: Path) -> None:
    args = _paynotify(
        "bridge", "--listen", "127.0.0.1:0",
        "--alipay-public-key", str(tmp_path / "absent.pem"), "--client-id", CLIENT_ID,
    )  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, env=_env())
    assert result.returncode == 2
    assert "absent.pem: cannot read it" in result.stderr
    assert result.stdout == ""


def test_bridge_command_needs_a_client_id(alipay_keys: Keys) -> None:
    result = subprocess.run(
        _paynotify("bridge", "--alipay-public-key", str(alipay_keys.public_path)),
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert result.returncode == 2
    assert "--client-id" in result.stderr


def test_hub_killed_and_restarted(make_bridge: BridgeFactory, tmp_path: Path) -> None:
    """kill -9 the hub: Alipay gets 503/U (nothing acknowledged); once it is back, SUCCESS."""
    body = sample_body("payment_result_success")
    with hub_process(tmp_path, groups=("billing",)) as hub:
        bridge = make_bridge(hub.address, publish_timeout=1.0)
        with subscribed(hub.address):
            assert bridge.notify(with_overrides(body, {"paymentId": "BEFORE"})).status == 200
        hub.kill()
        down = bridge.notify(body)
        assert down.status == 503
        assert down.result["resultStatus"] == "U"
        assert bridge.get("/readyz").status == 503

        hub.restart()
        _wait_until(lambda: bridge.get("/readyz").status == 200)
        with subscribed(hub.address) as subscriber:
            reply = bridge.notify(body)
            assert subscriber.next().raw_json == body
        assert reply.body == SUCCESS_BODY


@pytest.mark.parametrize("stop", ["kill", "terminate"])
def test_every_request_after_a_hub_restart_is_answered(
    make_bridge: BridgeFactory, tmp_path: Path, stop: str
) -> None:
    """Once the hub is back, no request falls into a stream that never sends: each of the next
    ones is acknowledged (distinct notifications, 50 ms apart, from the moment /readyz is 200)."""
    body = sample_body("payment_result_success")
    with hub_process(tmp_path, groups=("billing",)) as hub:
        bridge = make_bridge(hub.address, publish_timeout=3.0, ack_cache_size=0)
        with subscribed(hub.address):
            assert bridge.notify(with_overrides(body, {"paymentId": "BEFORE"})).status == 200
            getattr(hub, stop)()
            if stop == "terminate":
                hub.wait()
            hub.restart()
            _wait_until(lambda: bridge.get("/readyz").status == 200)
            statuses = []
            for n in range(10):
                reply = bridge.notify(with_overrides(body, {"paymentId": f"AFTER{n}"}))
                statuses.append((n, reply.status, reply.result["resultStatus"]))
                time.sleep(0.05)
    assert all(status == 200 for _, status, _ in statuses), statuses


def _wait_until(condition: Callable[[], bool], timeout: float = SOON) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)
