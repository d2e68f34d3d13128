"""Leases: nack, expiry, dropped streams, flow control, dead letters after max attempts."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from paynotify.v1 import hub_pb2
from paynotify_hub.domain import RetryPolicy
from tests.hub.helpers import dead_letters, group_state, publish_pending
from tests.hubkit import make_notification, publish_async, raw_subscriber, running_hub

OK = hub_pb2.ACTION_STATUS_OK


async def test_nack_redelivers_after_the_requested_delay(tmp_path: Path) -> None:
    async with running_hub(tmp_path) as hub, raw_subscriber(hub.address) as sub:
        await publish_pending(hub.address, 1)
        [first] = await sub.receive(1)
        nacked_at = time.monotonic()
        [result] = await sub.nack(first.delivery_id, delay=0.6)
        assert result.status == OK and result.kind == hub_pb2.ACTION_KIND_NACK
        # Taken as it arrives: not before the delay counted from before the nack was sent (a
        # fixed quiet window after the reply would count a slow reply against the hub).
        [second] = await sub.receive(1, timeout=5)
        assert time.monotonic() - nacked_at >= 0.55
        assert second.notification_id == first.notification_id
        assert second.attempt == 2
        assert second.delivery_id != first.delivery_id


async def test_nack_without_delay_uses_the_backoff(tmp_path: Path) -> None:
    retry = RetryPolicy(min_backoff=0.5, max_backoff=5.0, max_attempts=5)
    async with running_hub(tmp_path, retry=retry) as hub, raw_subscriber(hub.address) as sub:
        await publish_pending(hub.address, 1)
        [first] = await sub.receive(1)
        nacked_at = time.monotonic()
        await sub.nack(first.delivery_id)
        [second] = await sub.receive(1, timeout=5)
        assert time.monotonic() - nacked_at >= 0.45  # the first backoff, 0.5 s
        assert second.attempt == 2


async def test_expired_lease_is_redelivered_to_another_member(tmp_path: Path) -> None:
    async with running_hub(tmp_path) as hub:
        await publish_pending(hub.address, 1)
        async with raw_subscriber(
            hub.address, client_id="stuck", max_in_flight=1, ack_deadline=0.5
        ) as stuck:
            [first] = await stuck.receive(1)
            assert first.attempt == 1
            async with raw_subscriber(hub.address, client_id="healthy") as healthy:
                [second] = await healthy.receive(1, timeout=5)
                assert second.notification_id == first.notification_id
                assert second.attempt == 2
                [late] = await stuck.ack(first.delivery_id)
                assert late.status == hub_pb2.ACTION_STATUS_STALE
                [result] = await healthy.ack(second.delivery_id)
                assert result.status == OK


async def test_extension_keeps_the_lease(tmp_path: Path) -> None:
    async with running_hub(tmp_path) as hub:
        await publish_pending(hub.address, 1)
        async with (
            raw_subscriber(hub.address, client_id="slow", ack_deadline=1.0) as slow,
            raw_subscriber(hub.address, client_id="other") as other,
        ):
            [d] = await slow.receive(1)
            for _ in range(3):
                [result] = await slow.extend(d.delivery_id, 1.0)
                assert result.status == OK and result.kind == hub_pb2.ACTION_KIND_EXTEND
                await asyncio.sleep(0.5)
            await other.receive_none(within=0.1)
            [result] = await slow.ack(d.delivery_id)
            assert result.status == OK
            await other.receive_none(within=0.5)


async def test_dropped_stream_is_redelivered(tmp_path: Path) -> None:
    async with running_hub(tmp_path) as hub:
        await publish_pending(hub.address, 2)
        async with raw_subscriber(hub.address, client_id="dropping") as dropping:
            first = await dropping.receive(2)
        # the stream is cancelled here, as a dropped connection would be
        async with raw_subscriber(hub.address, client_id="next") as nxt:
            again = await nxt.receive(2, timeout=5)
        assert {d.notification_id for d in again} == {d.notification_id for d in first}
        assert {d.attempt for d in again} == {2}


async def test_max_in_flight_is_never_exceeded(tmp_path: Path) -> None:
    async with running_hub(tmp_path) as hub:
        await publish_pending(hub.address, 6)
        async with raw_subscriber(hub.address, max_in_flight=3) as sub:
            assert sub.opened is not None and sub.opened.max_in_flight == 3
            held = await sub.receive(3)
            await sub.receive_none(within=0.6)
            await sub.ack(held[0].delivery_id)
            [fourth] = await sub.receive(1)
            await sub.receive_none(within=0.4)
            await sub.ack(held[1].delivery_id, held[2].delivery_id)
            rest = await sub.receive(2)
            await sub.receive_none(within=0.4)
            ids = {d.notification_id for d in [*held, fourth, *rest]}
            assert len(ids) == 6


async def test_max_attempts_makes_a_dead_letter(tmp_path: Path) -> None:
    retry = RetryPolicy(min_backoff=0.05, max_backoff=0.1, max_attempts=2)
    async with running_hub(tmp_path, retry=retry) as hub, raw_subscriber(hub.address) as sub:
        n = make_notification("P1")
        publishing = asyncio.create_task(publish_async(hub.address, n, 10))
        [first] = await sub.receive(1)
        await sub.nack(first.delivery_id, delay=0)
        [second] = await sub.receive(1)
        assert second.attempt == 2
        await sub.nack(second.delivery_id, delay=0)
        response = await publishing
        assert response.outcome == hub_pb2.PUBLISH_OUTCOME_ACKNOWLEDGED  # a dead letter counts
        status = group_state(response, "billing")
        assert status.state == hub_pb2.DELIVERY_STATE_DEAD and status.attempts == 2
        await sub.receive_none(within=0.5)
        [(_, payment_id, payload)] = await dead_letters(hub.store)
        assert payment_id == "P1" and payload


async def test_expiry_out_of_attempts_makes_a_dead_letter(tmp_path: Path) -> None:
    retry = RetryPolicy(min_backoff=0.05, max_backoff=0.1, max_attempts=1)
    async with running_hub(tmp_path, retry=retry) as hub:
        n = make_notification("P1")
        publishing = asyncio.create_task(publish_async(hub.address, n, 10))
        async with raw_subscriber(hub.address, ack_deadline=0.3) as sub:
            [d] = await sub.receive(1)
            response = await publishing
            assert response.outcome == hub_pb2.PUBLISH_OUTCOME_ACKNOWLEDGED
            assert group_state(response, "billing").state == hub_pb2.DELIVERY_STATE_DEAD
            [late] = await sub.ack(d.delivery_id)
            assert late.status == hub_pb2.ACTION_STATUS_STALE
