"""Store outages, shutdown while Publish waits, metrics."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import grpc
import pytest

from paynotify.v1 import hub_pb2
from tests.hubkit import make_notification, publish_async, raw_subscriber, running_hub


async def test_store_outage_publish_is_unavailable_and_the_hub_recovers(tmp_path: Path) -> None:
    async with running_hub(tmp_path) as hub, raw_subscriber(hub.address) as sub:
        await hub.store.close()  # the real store goes away under the running hub
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await publish_async(hub.address, make_notification("P1"), 10)
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        await asyncio.sleep(0.5)  # dispatch and reaper loops fail meanwhile, and must survive
        await hub.store.open()
        publishing = asyncio.create_task(publish_async(hub.address, make_notification("P1"), 10))
        [d] = await sub.receive(1, timeout=10)
        await sub.ack(d.delivery_id)
        assert (await publishing).outcome == hub_pb2.PUBLISH_OUTCOME_ACKNOWLEDGED


async def test_waiting_publish_is_unavailable_when_the_hub_stops_so_callers_retry_elsewhere(
    tmp_path: Path,
) -> None:
    async with running_hub(tmp_path) as hub:
        publishing = asyncio.create_task(publish_async(hub.address, make_notification("P1"), 30))
        await asyncio.sleep(0.3)
        await hub.stop(grace=0.5)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await asyncio.wait_for(publishing, 5)
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "stored" in (failed.value.details() or "")


async def test_an_ack_landing_during_the_drain_settles_a_waiting_publish(tmp_path: Path) -> None:
    async with (
        running_hub(tmp_path, shutdown_grace=5.0) as hub,
        raw_subscriber(hub.address) as sub,
    ):
        publishing = asyncio.create_task(publish_async(hub.address, make_notification("P1"), 30))
        [d] = await sub.receive(1)
        stopping = asyncio.create_task(hub.stop())
        await asyncio.sleep(0.3)
        assert not publishing.done()
        [result] = await sub.ack(d.delivery_id)
        assert result.status == hub_pb2.ACTION_STATUS_OK
        response = await asyncio.wait_for(publishing, 5)
        assert response.outcome == hub_pb2.PUBLISH_OUTCOME_ACKNOWLEDGED
        assert await sub.wait_closed() == grpc.StatusCode.UNAVAILABLE
        await asyncio.wait_for(stopping, 10)


async def test_publish_to_a_stopping_hub_is_unavailable(tmp_path: Path) -> None:
    async with running_hub(tmp_path) as hub:
        await hub.broker.shutdown(drain=0)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await publish_async(hub.address, make_notification("P1"), 10)
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        async with raw_subscriber(hub.address, expect_open=False) as sub:
            assert await sub.wait_closed() == grpc.StatusCode.UNAVAILABLE


async def test_every_required_group_must_ack(tmp_path: Path) -> None:
    async with (
        running_hub(tmp_path, groups=("billing", "ledger")) as hub,
        raw_subscriber(hub.address, "billing") as billing,
        raw_subscriber(hub.address, "ledger") as ledger,
    ):
        publishing = asyncio.create_task(publish_async(hub.address, make_notification("P1"), 10))
        [b] = await billing.receive(1)
        await billing.ack(b.delivery_id)
        [x] = await ledger.receive(1)
        await asyncio.sleep(0.3)
        assert not publishing.done()
        await ledger.ack(x.delivery_id)
        assert (await publishing).outcome == hub_pb2.PUBLISH_OUTCOME_ACKNOWLEDGED


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


async def test_metrics_are_served_when_asked(tmp_path: Path) -> None:
    async with running_hub(tmp_path, metrics_listen="127.0.0.1:0") as hub:
        async with raw_subscriber(hub.address) as sub:
            publishing = asyncio.create_task(publish_async(hub.address, make_notification(), 10))
            [d] = await sub.receive(1)
            await sub.ack(d.delivery_id)
            await publishing
        assert hub.hub.metrics_server is not None
        text = await asyncio.to_thread(_scrape, hub.hub.metrics_server.port)
        assert 'paynotify_hub_publishes_total{outcome="acknowledged"} 1.0' in text
        assert 'paynotify_hub_deliveries_total{group="billing"} 1.0' in text
        assert 'paynotify_hub_actions_total{group="billing",kind="ack",status="ok"} 1.0' in text
        assert "P1" not in text and "raw_json" not in text
