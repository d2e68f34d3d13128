"""The bridge's publisher over PublishStream: many threads, few streams, results matched by ref.

Real hubs (in a thread, or `paynotify hub` processes to kill), the real HubPublisher and the
subscriber library; nothing is mocked.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from paynotify.v1 import hub_pb2, notification_pb2
from paynotify_bridge.errors import HubUnavailable, MalformedBody, NotAcknowledged, PublishFailed
from paynotify_bridge.publish_stream import StreamPool, StreamSettings
from paynotify_bridge.publisher import HubPublisher, PublishResult, channel_target, service_config
from tests.bridge.conftest import SOON, Collector, subscribed
from tests.hubkit import ThreadedHub, free_port, hub_in_thread, hub_process, make_notification

# Past `timeout`, publish() may take this long to return (thread wake-ups on a loaded machine).
SLACK = 0.5


def receipt() -> hub_pb2.Receipt:
    received = Timestamp()
    received.GetCurrentTime()
    return hub_pb2.Receipt(received_at=received, client_id="test", request_id="r")


def notifications(prefix: str, count: int) -> list[notification_pb2.PaymentNotification]:
    return [make_notification(payment_id=f"{prefix}-{i:03d}") for i in range(count)]


@contextlib.contextmanager
def hub_publisher(hubs: list[str], timeout: float) -> Iterator[HubPublisher]:
    publisher = HubPublisher(hubs, timeout)
    try:
        yield publisher
    finally:
        publisher.close()


def publish_all(
    publisher: HubPublisher, batch: list[notification_pb2.PaymentNotification], threads: int = 32
) -> list[Future[PublishResult]]:
    with ThreadPoolExecutor(threads) as pool:
        return [pool.submit(publisher.publish, n, receipt()) for n in batch]


def assert_each_acknowledged_once(
    futures: list[Future[PublishResult]],
    batch: list[notification_pb2.PaymentNotification],
    collector: Collector,
) -> None:
    """Every caller got its own notification's result; the subscriber saw each exactly once."""
    results = [f.result(SOON) for f in futures]
    assert not any(r.already_acknowledged for r in results)
    collector.assert_total(len(batch), settle=0.3)
    seen = {m.notification.payment_id: m.notification_id for m in collector.seen}
    assert {n.payment_id: r.notification_id for n, r in zip(batch, results, strict=True)} == seen


def folder(tmp_path: Path, name: str) -> Path:
    (tmp_path / name).mkdir(exist_ok=True)
    return tmp_path / name


def wait_until(condition: Callable[[], bool], timeout: float = SOON) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def stored(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
        return int(conn.execute("SELECT count(*) FROM notifications").fetchone()[0])


def test_many_threads_share_the_streams_and_each_gets_its_own_result(hub: ThreadedHub) -> None:
    batch = notifications("MANY", 200)
    with subscribed(hub.address) as collector, hub_publisher([hub.address], 10.0) as publisher:
        futures = publish_all(publisher, batch)
        assert_each_acknowledged_once(futures, batch, collector)
        again = publisher.publish(batch[7], receipt())  # Alipay's retry of one of them
    assert again.already_acknowledged
    assert again.notification_id == futures[7].result().notification_id


def test_nobody_acking_is_not_acknowledged_within_the_timeout(hub: ThreadedHub) -> None:
    timeout = 1.0

    def timed(n: notification_pb2.PaymentNotification) -> tuple[type[Exception], float]:
        started = time.monotonic()
        with pytest.raises(PublishFailed) as caught:
            publisher.publish(n, receipt())
        return caught.type, time.monotonic() - started

    with hub_publisher([hub.address], timeout) as publisher, ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(timed, notifications("PENDING", 40)))
    assert {kind for kind, _ in outcomes} == {NotAcknowledged}
    assert all(timeout - 0.5 < took < timeout + SLACK for _, took in outcomes), outcomes


def test_a_refused_notification_is_malformed_body_with_the_hubs_detail(hub: ThreadedHub) -> None:
    n = make_notification()
    n.ClearField("payment_id")
    n.ClearField("payment_request_id")
    with (
        hub_publisher([hub.address], 2.0) as publisher,
        pytest.raises(MalformedBody, match="neither payment_id nor payment_request_id"),
    ):
        publisher.publish(n, receipt())


def test_close_fails_waiting_publishes_and_later_ones_at_once(hub: ThreadedHub) -> None:
    publisher = HubPublisher([hub.address], 5.0)
    with ThreadPoolExecutor(4) as pool:
        waiting = [pool.submit(publisher.publish, n, receipt()) for n in notifications("CL", 4)]
        wait_until(lambda: _stored_in(hub) == 4)  # nobody acks: all four wait at the hub
        started = time.monotonic()
        publisher.close()
        for future in waiting:
            with pytest.raises(HubUnavailable):
                future.result(SOON)
    with pytest.raises(HubUnavailable):
        publisher.publish(make_notification(), receipt())
    assert time.monotonic() - started < 1.0


def test_no_hub_to_take_it_is_hub_unavailable_within_the_timeout(dead_hub_address: str) -> None:
    with hub_publisher([dead_hub_address], 2.0) as publisher:
        for n in notifications("DEAD", 3):
            started = time.monotonic()
            with pytest.raises(HubUnavailable):
                publisher.publish(n, receipt())
            assert time.monotonic() - started < 2.0 + SLACK


def test_a_hub_that_never_answers_bounds_publish_by_the_timeout() -> None:
    """A listener that accepts connections and says nothing (a frozen hub): bounded, 503."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        with hub_publisher([address], 1.0) as publisher:
            started = time.monotonic()
            with pytest.raises(PublishFailed):
                publisher.publish(make_notification(), receipt())
            assert time.monotonic() - started < 1.0 + SLACK


def test_a_hub_killed_mid_flight_hands_its_items_to_the_other_hub(tmp_path: Path) -> None:
    """Twenty publishes wait at hub A (nobody subscribes there); A is killed (-9): they are sent
    again to hub B, where a subscriber acks each once, and every caller gets its own result."""
    b_address = f"127.0.0.1:{free_port()}"
    batch = notifications("KILL", 20)
    with (
        hub_process(tmp_path / "a") as a,
        hub_publisher([a.address, b_address], 12.0) as publisher,
        ThreadPoolExecutor(20) as pool,
    ):
        futures = [pool.submit(publisher.publish, n, receipt()) for n in batch]
        wait_until(lambda: stored(tmp_path / "a" / "hub.db") == 20)  # all on A: B is down
        with (
            hub_in_thread(folder(tmp_path, "b"), listen=b_address) as b,
            subscribed(b.address) as collector,
        ):
            time.sleep(3.0)  # the publisher's channel reconnects to B (backoff at most 2 s)
            a.kill()
            assert_each_acknowledged_once(futures, batch, collector)


def test_a_hub_stopping_gracefully_hands_its_waiting_items_to_the_other_hub(
    tmp_path: Path,
) -> None:
    b_address = f"127.0.0.1:{free_port()}"
    batch = notifications("TERM", 20)
    with contextlib.ExitStack() as a_running:
        a = a_running.enter_context(hub_in_thread(folder(tmp_path, "a")))
        with (
            hub_publisher([a.address, b_address], 12.0) as publisher,
            ThreadPoolExecutor(20) as pool,
        ):
            futures = [pool.submit(publisher.publish, n, receipt()) for n in batch]
            wait_until(lambda: _stored_in(a) == 20)
            with (
                hub_in_thread(folder(tmp_path, "b"), listen=b_address) as b,
                subscribed(b.address) as collector,
            ):
                time.sleep(3.0)  # the publisher's channel reconnects to B
                a_running.close()  # graceful: waiting items are answered UNAVAILABLE after grace
                assert_each_acknowledged_once(futures, batch, collector)


def test_streams_are_renewed_and_spread_over_every_hub(tmp_path: Path) -> None:
    """Streams opened while one hub is down all land on the other; renewed after `max_age`,
    they reach the hub that came back (round robin), so both get a share of the publishes."""
    b_address = f"127.0.0.1:{free_port()}"
    with hub_in_thread(folder(tmp_path, "a")) as a, subscribed(a.address) as on_a:
        channel = grpc.insecure_channel(
            channel_target([a.address, b_address]),
            [("grpc.service_config", service_config()), ("grpc.max_reconnect_backoff_ms", 300)],
        )
        pool = StreamPool(channel, 5.0, settings=StreamSettings(streams=2, max_age=0.3))
        try:
            assert _ack_outcome(pool, make_notification()) == hub_pb2.PUBLISH_OUTCOME_ACKNOWLEDGED
            with hub_in_thread(folder(tmp_path, "b"), listen=b_address) as b, subscribed(b.address):
                for n in notifications("SPREAD", 30):
                    assert _ack_outcome(pool, n) == hub_pb2.PUBLISH_OUTCOME_ACKNOWLEDGED
                    time.sleep(0.1)
                assert _stored_in(b) > 0
            assert len(on_a.seen) > 1
        finally:
            pool.close()
            channel.close()


def _ack_outcome(pool: StreamPool, n: notification_pb2.PaymentNotification) -> int:
    return int(pool.publish(hub_pb2.PublishRequest(notification=n, receipt=receipt())).outcome)


def _stored_in(hub: ThreadedHub) -> int:
    return stored(Path(hub.config.store_url.removeprefix("sqlite:///")))
