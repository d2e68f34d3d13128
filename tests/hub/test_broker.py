"""The broker without gRPC: a real SQLite store and an injected clock, so time is not slept."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from paynotify_hub.broker import Broker
from paynotify_hub.config import HubConfig
from paynotify_hub.convert import new_notification
from paynotify_hub.domain import ActionStatus, DeliveryState, GroupSpec, ReceiptRecord, RetryPolicy
from paynotify_hub.member import Member, format_delivery_id
from paynotify_hub.publishing import PublishOutcome
from paynotify_hub.store import Store, open_store
from tests.hubkit import make_notification


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'hub.db'}")
    await s.open()
    yield s
    await s.close()


def make_broker(store: Store, clock: Clock, *groups: GroupSpec) -> Broker:
    config = HubConfig(
        groups=groups or (GroupSpec("billing"),),
        retry=RetryPolicy(min_backoff=0.0, max_backoff=0.0, max_attempts=3),
        poll_interval=0.05,
        lease_check_interval=3600,  # the test reaps by hand
        hub_id="unit",
    )
    return Broker(config, store, clock=clock)


def receipt(clock: Clock) -> ReceiptRecord:
    return ReceiptRecord(received_at=clock.now)


async def next_ids(member: Member) -> list[str]:
    return [format_delivery_id(x.notification_id, x.token) for x in await member.next_batch()]


async def test_an_expired_lease_goes_to_another_member_without_sleeping(store: Store) -> None:
    clock = Clock()
    broker = make_broker(store, clock)
    await broker.start()
    try:
        result = await broker.publish(new_notification(make_notification("P1")), receipt(clock), 0)
        assert result.outcome is PublishOutcome.PENDING
        stuck = await broker.open_member("billing", "stuck", max_in_flight=1, ack_deadline=30)
        [held] = await next_ids(stuck)
        other = await broker.open_member("billing", "other")
        clock.now += 31
        await broker._housekeeper.reap_once()
        [again] = await next_ids(other)
        assert again != held
        assert await broker.ack(stuck, held) is ActionStatus.STALE
        assert await broker.ack(other, again) is ActionStatus.OK
        states = await store.group_states(result.notification_id)
        assert states["billing"].state is DeliveryState.ACKED
        assert states["billing"].attempts == 2
    finally:
        await broker.shutdown(drain=0)
        await broker.close()


async def test_a_required_group_whose_filter_excludes_the_type_does_not_gate(store: Store) -> None:
    clock = Clock()
    pos = GroupSpec("pos", required=True, notify_types=frozenset({"OFFLINE_PAYMENT_CODE"}))
    audit = GroupSpec("audit", required=False)
    broker = make_broker(store, clock, pos, audit)
    await broker.start()
    try:
        n = new_notification(make_notification("P1"))
        first = await broker.publish(n, receipt(clock), 5)
        assert first.outcome is PublishOutcome.ACKNOWLEDGED  # no required group wants it
        assert [g.group for g in first.groups] == ["audit"]
        again = await broker.publish(n, receipt(clock), 5)
        assert again.outcome is PublishOutcome.ALREADY_ACKNOWLEDGED
        assert again.send_count == 2
    finally:
        await broker.close()


async def test_closing_a_member_releases_its_leases_and_nack_runs_out_of_attempts(
    store: Store,
) -> None:
    clock = Clock()
    broker = make_broker(store, clock)
    await broker.start()
    try:
        result = await broker.publish(new_notification(make_notification("P1")), receipt(clock), 0)
        first = await broker.open_member("billing", "first")
        [a] = await next_ids(first)
        await broker.close_member(first)
        second = await broker.open_member("billing", "second")
        [b] = await next_ids(second)
        assert await broker.nack(second, b, delay=0) is ActionStatus.OK
        [c] = await next_ids(second)
        assert len({a, b, c}) == 3
        assert await broker.nack(second, c, delay=0) is ActionStatus.OK  # the third attempt
        states = await store.group_states(result.notification_id)
        assert states["billing"].state is DeliveryState.DEAD
        assert second.in_flight == 0
    finally:
        await broker.close()


async def test_malformed_ids_never_reach_the_store(store: Store) -> None:
    broker = make_broker(store, Clock())
    await broker.start()
    try:
        member = await broker.open_member("billing", "m")
        for bad in ("", "x", "1", "a.b"):
            assert await broker.ack(member, bad) is ActionStatus.UNKNOWN
            assert await broker.extend(member, bad, None) is ActionStatus.UNKNOWN
    finally:
        await broker.close()
