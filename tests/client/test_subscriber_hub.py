"""The real Subscriber against a real hub (grpc.aio in a thread, real SQLite file). No mocks."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from paynotify.v1 import hub_pb2
from paynotify_client import FlowControl, GroupNotFoundError, Message, tail
from tests.client.support import Recorder, subscriber, wait_until
from tests.hubkit import ThreadedHub, free_port, hub_in_thread, make_notification, publish

ACKNOWLEDGED = hub_pb2.PUBLISH_OUTCOME_ACKNOWLEDGED


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[ThreadedHub]:
    with hub_in_thread(tmp_path, groups=("billing",)) as running:
        yield running


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(8) as executor:
        yield executor


def _publish_later(
    pool: ThreadPoolExecutor, hub: ThreadedHub, timeout: float = 15.0
) -> Future[hub_pb2.PublishResponse]:
    return pool.submit(publish, hub.address, make_notification(), timeout)


def test_an_ack_completes_publish(hub: ThreadedHub) -> None:
    recorder = Recorder()
    notification = make_notification()
    with subscriber(hub.address) as sub:
        future = sub.subscribe(recorder)
        response = publish(hub.address, notification, timeout=10)
        assert future.running()
    assert response.outcome == ACKNOWLEDGED
    [message] = recorder.messages
    assert message.notification.payment_id == notification.payment_id
    assert message.raw_json == notification.raw_json
    assert message.notification_id == response.notification_id
    assert (message.attempt, message.alipay_send_count) == (1, 1)
    assert message.first_received_at is not None and message.lease_expires_at is not None
    future.result(timeout=0)


def test_nack_with_delay_redelivers_as_attempt_two(hub: ThreadedHub) -> None:
    recorder = Recorder(lambda m: m.nack(0.6) if m.attempt == 1 else m.ack())
    with subscriber(hub.address) as sub:
        sub.subscribe(recorder)
        response = publish(hub.address, make_notification(), timeout=10)
    assert response.outcome == ACKNOWLEDGED
    assert recorder.attempts == [1, 2]
    assert recorder.times[1] - recorder.times[0] >= 0.55
    first, second = recorder.messages
    assert first.notification_id == second.notification_id
    assert first.delivery_id != second.delivery_id


def test_a_raising_callback_is_nacked_and_redelivered(
    hub: ThreadedHub, caplog: pytest.LogCaptureFixture
) -> None:
    def callback(message: Message) -> None:
        if message.attempt == 1:
            raise RuntimeError("downstream unavailable")
        message.ack()

    recorder = Recorder(callback)
    with subscriber(hub.address) as sub:
        sub.subscribe(recorder)
        response = publish(hub.address, make_notification(), timeout=10)
    assert response.outcome == ACKNOWLEDGED
    assert recorder.attempts == [1, 2]
    assert f"callback raised for delivery {recorder.messages[0].delivery_id}" in caplog.text


def test_reject_dead_letters_and_settles_publish(hub: ThreadedHub) -> None:
    recorder = Recorder(lambda m: m.reject("currency not handled"))
    with subscriber(hub.address) as sub:
        sub.subscribe(recorder)
        response = publish(hub.address, make_notification(), timeout=10)
        time.sleep(0.3)
    assert response.outcome == ACKNOWLEDGED
    assert [g.state for g in response.groups] == [hub_pb2.DELIVERY_STATE_DEAD]
    assert recorder.attempts == [1]  # never redelivered


def test_flow_control_bounds_concurrent_callbacks(
    hub: ThreadedHub, pool: ThreadPoolExecutor
) -> None:
    lock, running, peak = threading.Lock(), [0], [0]

    def slow(message: Message) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.3)
        with lock:
            running[0] -= 1
        message.ack()

    flow = FlowControl(max_in_flight=2, callback_threads=8)
    with subscriber(hub.address, flow_control=flow) as sub:
        sub.subscribe(slow)
        futures = [_publish_later(pool, hub) for _ in range(6)]
        outcomes = [f.result(30).outcome for f in futures]
    assert outcomes == [ACKNOWLEDGED] * 6
    assert peak[0] == 2


def test_an_undeclared_group_stops_with_not_found_and_no_retry(
    hub: ThreadedHub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="paynotify_client")
    started = time.monotonic()
    with subscriber(hub.address, "nobody-declared-this") as sub:
        future = sub.subscribe(Recorder())
        with pytest.raises(GroupNotFoundError) as raised:
            future.result(timeout=10)
    assert raised.value.code == grpc.StatusCode.NOT_FOUND
    assert "nobody-declared-this" in raised.value.details
    assert time.monotonic() - started < 5
    assert not future.running()
    assert "reconnecting" not in caplog.text


def test_close_waits_for_a_running_callback_and_its_ack_lands(
    hub: ThreadedHub, pool: ThreadPoolExecutor
) -> None:
    entered = threading.Event()

    def slow(message: Message) -> None:
        entered.set()
        time.sleep(1.0)
        message.ack()

    sub = subscriber(hub.address)
    future = sub.subscribe(slow)
    published = _publish_later(pool, hub)
    assert entered.wait(10)
    started = time.monotonic()
    sub.close(timeout=10)
    assert 0.5 < time.monotonic() - started < 5
    assert future.done()
    assert published.result(10).outcome == ACKNOWLEDGED


def test_close_is_bounded_when_a_callback_never_returns(
    hub: ThreadedHub, caplog: pytest.LogCaptureFixture
) -> None:
    entered, release = threading.Event(), threading.Event()

    def stuck(message: Message) -> None:
        entered.set()
        release.wait(30)

    sub = subscriber(hub.address)
    future = sub.subscribe(stuck)
    publish(hub.address, make_notification(), timeout=0.5)  # stored, answered PENDING
    assert entered.wait(10)
    started = time.monotonic()
    sub.close(timeout=0.5)
    release.set()
    assert time.monotonic() - started < 3
    assert future.done()
    assert "still running after the timeout" in caplog.text


def test_cancel_closes_in_the_background_and_result_returns(hub: ThreadedHub) -> None:
    sub = subscriber(hub.address)
    future = sub.subscribe(Recorder())
    assert future.cancel()
    future.result(timeout=10)
    assert not future.running()
    assert not future.cancel()


def test_extend_and_action_results_reach_the_hook(hub: ThreadedHub) -> None:
    results: list[hub_pb2.ActionResult] = []
    extended = threading.Event()

    def hook(result: hub_pb2.ActionResult) -> None:
        results.append(result)
        if result.kind == hub_pb2.ACTION_KIND_EXTEND:
            extended.set()

    def callback(message: Message) -> None:
        message.extend(20)
        assert extended.wait(5)
        message.ack()

    with subscriber(hub.address, on_action_result=hook) as sub:
        sub.subscribe(callback)
        assert publish(hub.address, make_notification(), timeout=10).outcome == ACKNOWLEDGED
        wait_until(lambda: len(results) == 2, what="two action results")
    assert [(r.kind, r.status) for r in results] == [
        (hub_pb2.ACTION_KIND_EXTEND, hub_pb2.ACTION_STATUS_OK),
        (hub_pb2.ACTION_KIND_ACK, hub_pb2.ACTION_STATUS_OK),
    ]


def test_a_late_ack_after_the_lease_expired_is_answered_stale(
    hub: ThreadedHub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="paynotify_client")
    results: list[hub_pb2.ActionResult] = []

    def callback(message: Message) -> None:
        if message.attempt == 1:
            time.sleep(1.0)  # longer than the 0.3 s ack deadline
        message.ack()

    recorder = Recorder(callback)
    with subscriber(hub.address, ack_deadline=0.3, on_action_result=results.append) as sub:
        sub.subscribe(recorder)
        assert publish(hub.address, make_notification(), timeout=10).outcome == ACKNOWLEDGED
        wait_until(lambda: len(results) == 2, what="two action results")
    assert sorted(recorder.attempts) == [1, 2]
    statuses = {r.delivery_id: r.status for r in results}
    assert statuses[recorder.messages[0].delivery_id] == hub_pb2.ACTION_STATUS_STALE
    assert "STALE" in caplog.text


def test_the_hub_stopping_makes_the_subscriber_reconnect(tmp_path: Path) -> None:
    recorder = Recorder()
    with hub_in_thread(tmp_path, groups=("billing",)) as first:
        address = first.address
        sub = subscriber(address)
        future = sub.subscribe(recorder)
        assert publish(address, make_notification(), timeout=10).outcome == ACKNOWLEDGED
    # The hub ended the stream (UNAVAILABLE) and is gone: the subscriber keeps retrying.
    time.sleep(0.5)
    assert future.running()
    sub.close(timeout=2)
    future.result(timeout=0)


def test_tail_main_in_process_prints_and_acks(
    hub: ThreadedHub, pool: ThreadPoolExecutor, capsys: pytest.CaptureFixture[str]
) -> None:
    published = _publish_later(pool, hub)
    assert tail.main(["--hub", hub.address, "--group", "billing", "--count", "1"]) == 0
    response = published.result(10)
    assert response.outcome == ACKNOWLEDGED
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line)["notification_id"] == response.notification_id


def test_a_subscriber_started_before_the_hub_connects_when_it_comes_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    address = f"127.0.0.1:{free_port()}"
    recorder = Recorder()
    with subscriber(address) as sub:
        future = sub.subscribe(recorder)
        wait_until(lambda: "reconnecting in" in caplog.text, what="a retry to be logged")
        assert future.running()
        with hub_in_thread(tmp_path, groups=("billing",), listen=address) as hub:
            assert publish(hub.address, make_notification(), timeout=15).outcome == ACKNOWLEDGED
            assert recorder.attempts == [1]
            sub.close(timeout=5)
    assert all(r.levelname == "WARNING" for r in caplog.records if "reconnecting" in r.message)
