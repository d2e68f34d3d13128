"""bench.stages' hooks against a real hub: every stage is stamped, in order, and undone after."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench.stages import STAGES, StageTrace, format_report, install
from paynotify.v1 import hub_pb2
from paynotify_hub import broker, service
from paynotify_hub.store import sqlite
from paynotify_hub.store.postgres import PostgresStore
from paynotify_hub.store.sqlite import SQLiteStore
from tests.hubkit import make_notification, publish_async, raw_subscriber, running_hub

BOUND = 10.0


async def test_each_notification_is_stamped_through_every_stage_in_order(tmp_path: Path) -> None:
    trace = StageTrace()
    with install(trace):
        async with (
            running_hub(tmp_path, ("billing", "ledger")) as hub,
            raw_subscriber(hub.address, group="billing") as billing,
            raw_subscriber(hub.address, group="ledger") as ledger,
        ):
            for i in range(3):
                pending = asyncio.create_task(
                    publish_async(hub.address, make_notification(f"S{i}"))
                )
                (first,) = await billing.receive(1)
                (second,) = await ledger.receive(1)
                await billing.ack(first.delivery_id)
                await asyncio.sleep(0.05)  # the ledger's ack comes last
                await ledger.ack(second.delivery_id)
                async with asyncio.timeout(BOUND):
                    response = await pending
                assert response.outcome == hub_pb2.PUBLISH_OUTCOME_ACKNOWLEDGED
            stamps = dict(trace.stamps)
            report = trace.report()

    assert len(stamps) == 3
    for times in stamps.values():
        assert set(times) == set(STAGES)
        ordered = [times[stage] for stage in STAGES]
        assert ordered == sorted(ordered), times
        # The last group's ack is the one that counts: it came at least 50 ms after the first.
        assert times["ack in"] - times["written"] >= 0.05
    assert report["notifications"] == 3
    whole = report["stages_ms"][f"{STAGES[0]} → {STAGES[-1]}"]
    assert whole["p50"] >= 50.0  # the publish waited for the late ack
    worker = report["sqlite_worker"]
    assert worker["batch size"]["p50"] >= 1 and worker["batch wall"]["mean"] > 0
    assert "received → appended" in format_report(report)
    assert trace.report()["notifications"] == 0  # a report starts the next window


def hooked() -> tuple[object, ...]:
    """Everything `install` wraps."""
    return (
        broker.Broker.publish,
        broker.Broker.ack_many,
        SQLiteStore.append,
        PostgresStore.append,
        service.fill_delivery,
        service._Stream.next_response,
        sqlite._Worker.queue,
        sqlite._Worker._run_batch,
        sqlite._settle,
    )


def test_the_hooks_are_undone_on_exit() -> None:
    originals = hooked()
    with install(StageTrace()):
        assert all(a is not b for a, b in zip(hooked(), originals, strict=True))
    assert hooked() == originals
