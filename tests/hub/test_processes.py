"""The hub and a subscriber as real processes: SIGTERM, kill -9 and restart, a subscriber killed."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import grpc
import pytest

from paynotify.v1 import hub_pb2
from tests.hub.helpers import publish_pending
from tests.hubkit import hub_process, publish_async, raw_subscriber, running_hub

pytestmark = pytest.mark.slow

OK = hub_pb2.ACTION_STATUS_OK


async def test_sigterm_lets_acks_land_ends_streams_unavailable_and_exits_0(
    tmp_path: Path,
) -> None:
    with hub_process(tmp_path, "--shutdown-grace", "3") as proc:
        [n] = await publish_pending(proc.address, 1)
        async with raw_subscriber(proc.address) as sub:
            [d] = await sub.receive(1)
            proc.terminate()
            await asyncio.sleep(0.3)  # the hub is draining: acks still land
            [result] = await sub.ack(d.delivery_id)
            assert result.status == OK
            assert await sub.wait_closed(timeout=10) == grpc.StatusCode.UNAVAILABLE
            assert "shutting down" in sub.details
        assert await asyncio.to_thread(proc.wait, 20) == 0
        assert "hub stopped" in proc.log()
        proc.restart()
        again = await publish_async(proc.address, n, 5)
        assert again.outcome == hub_pb2.PUBLISH_OUTCOME_ALREADY_ACKNOWLEDGED


async def test_kill_9_with_deliveries_pending_then_restart_delivers_all_and_loses_no_ack(
    tmp_path: Path,
) -> None:
    with hub_process(tmp_path) as proc:
        notifications = await publish_pending(proc.address, 5)
        async with raw_subscriber(proc.address, max_in_flight=3, ack_deadline=1.0) as sub:
            held = await sub.receive(3)
            results = await sub.ack(held[0].delivery_id, held[1].delivery_id)
            assert [r.status for r in results] == [OK, OK]
            proc.kill()
            assert await sub.wait_closed() == grpc.StatusCode.UNAVAILABLE
        acked = {held[0].notification.payment_id, held[1].notification.payment_id}
        proc.restart()
        async with raw_subscriber(proc.address) as sub:
            rest = await sub.receive(3, timeout=10)  # the leased one after its lease expires
            await sub.receive_none(within=1.0)
            await sub.ack(*(d.delivery_id for d in rest))
        rest_ids = {d.notification.payment_id for d in rest}
        assert rest_ids | acked == {n.payment_id for n in notifications}
        assert not rest_ids & acked, "an acknowledged notification was delivered again"
        by_id = {d.notification.payment_id: d for d in rest}
        assert by_id[held[2].notification.payment_id].attempt == 2
        for n in notifications:
            response = await publish_async(proc.address, n, 5)
            assert response.outcome == hub_pb2.PUBLISH_OUTCOME_ALREADY_ACKNOWLEDGED


# A subscriber that takes deliveries and never finishes its callback.
_STUCK_SUBSCRIBER = textwrap.dedent(
    """
    import sys, time, grpc
    from paynotify.v1 import hub_pb2, hub_pb2_grpc

    def requests():
        yield hub_pb2.SubscribeRequest(open=hub_pb2.Open(group="billing", client_id="doomed"))
        while True:
            time.sleep(3600)

    channel = grpc.insecure_channel(sys.argv[1])
    for response in hub_pb2_grpc.NotificationHubStub(channel).Subscribe(requests()):
        for delivery in response.deliveries:
            print("got", delivery.notification_id, flush=True)
    """
)


def _start_stuck_subscriber(address: str, out: Path) -> subprocess.Popen[bytes]:
    with out.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-c", _STUCK_SUBSCRIBER, address],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def _wait_for_lines(path: Path, prefix: str, count: int, timeout: float = 20.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [x for x in path.read_text().splitlines() if x.startswith(prefix)]
        if len(lines) >= count:
            return lines
        time.sleep(0.05)
    raise AssertionError(f"subscriber printed {path.read_text()!r}")


async def test_subscriber_process_killed_mid_callback_its_deliveries_go_to_another_member(
    tmp_path: Path,
) -> None:
    async with running_hub(tmp_path) as hub:
        await publish_pending(hub.address, 2)
        out = tmp_path / "subscriber.out"
        child = _start_stuck_subscriber(hub.address, out)
        try:
            lines = await asyncio.to_thread(_wait_for_lines, out, "got ", 2)
            async with raw_subscriber(hub.address, client_id="survivor") as survivor:
                await survivor.receive_none(within=0.3)  # still leased to the stuck one
                child.kill()
                again = await survivor.receive(2, timeout=10)
        finally:
            child.kill()
            child.wait(10)
        assert {d.notification_id for d in again} == {x.split()[1] for x in lines}
        assert {d.attempt for d in again} == {2}
