"""Fan-out to groups, competing members within a group, type filters."""

from __future__ import annotations

import asyncio
from pathlib import Path

from paynotify.v1 import hub_pb2
from tests.hub.helpers import publish_pending
from tests.hubkit import (
    RawSubscriber,
    make_notification,
    publish_async,
    raw_subscriber,
    running_hub,
)


async def test_two_groups_both_receive(tmp_path: Path) -> None:
    async with (
        running_hub(tmp_path, groups=("billing", "ledger")) as hub,
        raw_subscriber(hub.address, "billing") as billing,
        raw_subscriber(hub.address, "ledger") as ledger,
    ):
        n = make_notification("P1")
        publishing = asyncio.create_task(publish_async(hub.address, n, timeout=5))
        [b] = await billing.receive(1)
        [x] = await ledger.receive(1)
        assert b.notification_id == x.notification_id
        assert b.notification.payment_id == x.notification.payment_id == "P1"
        assert b.raw_json == n.raw_json and b.attempt == x.attempt == 1
        await billing.ack(b.delivery_id)
        await ledger.ack(x.delivery_id)
        assert (await publishing).outcome == hub_pb2.PUBLISH_OUTCOME_ACKNOWLEDGED


async def test_competing_members_split_one_groups_load(tmp_path: Path) -> None:
    async with (
        running_hub(tmp_path, groups=("billing",)) as hub,
        raw_subscriber(hub.address, "billing", client_id="a", max_in_flight=1) as a,
        raw_subscriber(hub.address, "billing", client_id="b", max_in_flight=1) as b,
    ):
        notifications = await publish_pending(hub.address, 12)
        received: dict[str, list[str]] = {"a": [], "b": []}

        async def work(name: str, sub: RawSubscriber) -> None:
            while sum(len(v) for v in received.values()) < len(notifications):
                try:
                    [d] = await sub.receive(1, timeout=0.5)
                except AssertionError:
                    continue
                received[name].append(d.notification.payment_id)
                await sub.ack(d.delivery_id)

        await asyncio.wait_for(asyncio.gather(work("a", a), work("b", b)), 20)
        everything = received["a"] + received["b"]
        assert sorted(everything) == sorted(n.payment_id for n in notifications)
        assert len(set(everything)) == len(everything), "a notification went to both members"
        assert received["a"] and received["b"], received
        await a.receive_none(within=0.3)
        await b.receive_none(within=0.1)


async def test_group_type_filter_and_member_filter(tmp_path: Path) -> None:
    async with (
        running_hub(tmp_path, groups=("billing", "pos:required:OFFLINE_PAYMENT_CODE")) as hub,
        raw_subscriber(hub.address, "pos") as pos,
        raw_subscriber(hub.address, "billing", notify_types=["PAYMENT_RESULT"]) as billing,
    ):
        result = make_notification("P1")
        code = make_notification("P2", notify_type="OFFLINE_PAYMENT_CODE", status="")
        await asyncio.gather(
            publish_async(hub.address, result, 1), publish_async(hub.address, code, 1)
        )
        [p] = await pos.receive(1)
        assert p.notification.payment_id == "P2"
        [d] = await billing.receive(1)
        assert d.notification.payment_id == "P1"
        await pos.receive_none(within=0.3)
        await billing.receive_none(within=0.1)
