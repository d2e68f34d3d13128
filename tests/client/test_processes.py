"""Real processes: a hub killed and restarted, `paynotify tail`, a member killed mid-callback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from paynotify.v1 import hub_pb2
from paynotify_client import Message
from tests.client.support import Recorder, subscriber, wait_until
from tests.hubkit import ThreadedHub, hub_in_thread, hub_process, make_notification, publish

pytestmark = pytest.mark.slow

ACKNOWLEDGED = hub_pb2.PUBLISH_OUTCOME_ACKNOWLEDGED
SETTLED = (hub_pb2.PUBLISH_OUTCOME_ACKNOWLEDGED, hub_pb2.PUBLISH_OUTCOME_ALREADY_ACKNOWLEDGED)

# A member that takes one delivery and hangs in its callback until it is killed.
DOOMED_MEMBER = """
import sys, time
from paynotify_client import Subscriber

def callback(message):
    print("got", message.delivery_id, message.notification_id, message.attempt, flush=True)
    time.sleep(600)

Subscriber(sys.argv[1], "billing", client_id="doomed").subscribe(callback).result()
"""


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[ThreadedHub]:
    with hub_in_thread(tmp_path, groups=("billing",)) as running:
        yield running


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4) as executor:
        yield executor


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PAYNOTIFY_")}


def _tail(address: str, log: Path, *args: str, group: str = "billing") -> subprocess.Popen[str]:
    """`paynotify tail` with stdout piped and its log (stderr) in the file `log`."""
    argv = [sys.executable, "-m", "paynotify_cli.main", "tail", "--hub", address, "--group", group]
    with log.open("w") as stderr:
        return subprocess.Popen(
            [*argv, *args], stdout=subprocess.PIPE, stderr=stderr, text=True, env=_env()
        )


def test_the_subscriber_reconnects_to_a_restarted_hub_and_gets_the_rest(tmp_path: Path) -> None:
    holding, release = threading.Event(), threading.Event()

    def callback(message: Message) -> None:
        if not holding.is_set():
            holding.set()
            release.wait(10)  # its ack goes to the dead stream and is dropped
        message.ack()

    recorder = Recorder(callback)
    with hub_process(tmp_path, groups=("billing",)) as hub:
        sub = subscriber(hub.address, ack_deadline=2.0)
        future = sub.subscribe(recorder)
        held = make_notification()
        assert publish(hub.address, held, timeout=1.5).outcome == hub_pb2.PUBLISH_OUTCOME_PENDING
        assert holding.wait(10)
        hub.kill()
        release.set()
        hub.restart()
        after = make_notification()
        assert publish(hub.address, after, timeout=20).outcome == ACKNOWLEDGED
        assert publish(hub.address, held, timeout=20).outcome in SETTLED
        assert future.running()
        sub.close(timeout=5)
    by_payment: dict[str, list[int]] = {}
    for message in recorder.messages:
        by_payment.setdefault(message.notification.payment_id, []).append(message.attempt)
    assert by_payment[held.payment_id][0] == 1 and len(by_payment[held.payment_id]) >= 2
    assert by_payment[after.payment_id] == [1]


def test_tail_prints_one_json_line_acks_it_and_exits(hub: ThreadedHub, tmp_path: Path) -> None:
    notification = make_notification()
    log = tmp_path / "tail.log"
    tail = _tail(hub.address, log, "--count", "1")
    try:
        response = publish(hub.address, notification, timeout=20)
        out, _ = tail.communicate(timeout=20)
    finally:
        tail.kill()
    assert response.outcome == ACKNOWLEDGED, log.read_text()
    assert tail.returncode == 0, log.read_text()
    [line] = out.splitlines()
    data = json.loads(line)
    assert data["notification_id"] == response.notification_id
    assert data["attempt"] == 1 and data["alipay_send_count"] == 1
    assert data["notification"]["payment_id"] == notification.payment_id
    assert "raw_json" not in data["notification"]
    assert data["raw_json"].encode() == notification.raw_json


def test_tail_exits_cleanly_on_sigterm(hub: ThreadedHub, tmp_path: Path) -> None:
    log = tmp_path / "tail.log"
    tail = _tail(hub.address, log)
    try:
        wait_until(lambda: "subscribed to group" in log.read_text(), 20, "tail to subscribe")
        tail.send_signal(signal.SIGTERM)
        assert tail.wait(15) == 0, log.read_text()
    finally:
        tail.kill()


def test_tail_on_an_undeclared_group_exits_1(hub: ThreadedHub, tmp_path: Path) -> None:
    log = tmp_path / "tail.log"
    tail = _tail(hub.address, log, group="ghosts")
    try:
        assert tail.wait(20) == 1
    finally:
        tail.kill()
    assert "NOT_FOUND" in log.read_text()


def test_a_member_killed_in_its_callback_loses_the_delivery_to_another(
    hub: ThreadedHub, tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    script = tmp_path / "doomed.py"
    script.write_text(DOOMED_MEMBER)
    doomed = subprocess.Popen(
        [sys.executable, str(script), hub.address], stdout=subprocess.PIPE, text=True, env=_env()
    )
    try:
        published = pool.submit(publish, hub.address, make_notification(), 30)
        assert doomed.stdout is not None
        line = pool.submit(doomed.stdout.readline).result(20)
        _, delivery_id, notification_id, attempt = line.split()
        assert attempt == "1"
        doomed.kill()
        doomed.wait(10)
    finally:
        doomed.kill()
    recorder = Recorder()
    with subscriber(hub.address, client_id="survivor") as sub:
        sub.subscribe(recorder)
        assert published.result(20).outcome == ACKNOWLEDGED
    [message] = recorder.messages
    assert message.notification_id == notification_id
    assert message.delivery_id != delivery_id
    assert message.attempt == 2
