"""An append kicks the claims of idle members right behind it (SQLite: one commit for both).

The broker on a real SQLite store and an injected clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from paynotify_hub.broker import Broker
from paynotify_hub.config import HubConfig
from paynotify_hub.convert import new_notification
from paynotify_hub.domain import DeliveryState, GroupSpec, Lease, ReceiptRecord, RetryPolicy
from paynotify_hub.member import Member, MemberSettings, format_delivery_id
from paynotify_hub.publishing import PublishOutcome
from paynotify_hub.store.sqlite import SQLiteStore
from tests.hubkit import make_notification
from tests.store.test_sqlite_batching import queued, write_locked

NOW = 1_700_000_000.0
BOUND = 10.0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "hub.db")
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def broker(store: SQLiteStore) -> AsyncIterator[Broker]:
    config = HubConfig(
        groups=(GroupSpec("billing"), GroupSpec("shipping")),
        retry=RetryPolicy(min_backoff=0.0, max_backoff=0.0, max_attempts=5),
        poll_interval=30.0,  # only kicks and wake-ups move the dispatch loops
        lease_check_interval=3600,
        hub_id="unit",
    )
    b = Broker(config, store, clock=lambda: NOW)
    await b.start()
    yield b
    await b.shutdown(drain=0)
    await b.close()


async def quiet(store: SQLiteStore, *members: Member) -> None:
    """Until every dispatch loop waits for news and the store's worker for work (the hub's
    housekeeping may be using it): the state in which an append kicks claims. Bounded."""
    worker = store._worker
    assert worker is not None
    async with asyncio.timeout(BOUND):
        while not (worker.idle() and all(m.idle for m in members)):  # noqa: ASYNC110
            await asyncio.sleep(0.001)


async def publish(broker: Broker, payment_id: str) -> int:
    """Publish without waiting for acks; the notification id."""
    notification = new_notification(make_notification(payment_id))
    result = await broker.publish(notification, ReceiptRecord(received_at=NOW), 0)
    assert result.outcome is PublishOutcome.PENDING
    return result.notification_id


async def test_an_idle_members_claim_is_queued_behind_the_append(
    broker: Broker, store: SQLiteStore
) -> None:
    billing = await broker.open_member("billing", "b")
    shipping = await broker.open_member("shipping", "s")
    for i in range(5):
        await quiet(store, billing, shipping)
        nid = await publish(broker, f"K{i}")
        # The append has just committed, and both claims with it: this read, queued now (before
        # any dispatch loop could run), finds both deliveries leased. Claims made once woken
        # would come after it.
        stats = await store.group_stats(NOW, ["billing", "shipping"])
        assert [s.leased for s in stats] == [1, 1]
        for member in (billing, shipping):
            [lease] = await member.next_batch()
            assert lease.notification_id == nid and lease.attempt == 1
            await broker.ack(member, format_delivery_id(nid, lease.token))


async def test_a_burst_of_kicks_keeps_flow_control_and_loses_no_wake_up(
    broker: Broker, store: SQLiteStore
) -> None:
    # The first append kicks a claim that sees only itself; the other five wake the loop after
    # the kick, and that news must survive the step that takes the kicked claim.
    member = await broker.open_member("billing", "b", max_in_flight=2)
    await quiet(store, member)
    await asyncio.gather(*(publish(broker, f"F{i}") for i in range(6)))
    seen: list[int] = []
    while len(seen) < 6:
        async with asyncio.timeout(BOUND):
            batch = await member.next_batch()
        assert member.in_flight <= 2
        [stats] = await store.group_stats(NOW, ["billing"])
        assert stats.leased <= 2
        for lease in batch:
            seen.append(lease.notification_id)
            await broker.ack(member, format_delivery_id(lease.notification_id, lease.token))
    assert seen == sorted(seen)  # oldest first, kicked or not


async def test_a_claim_kicked_as_the_stream_ends_is_released_with_it(
    broker: Broker, store: SQLiteStore
) -> None:
    leaving = await broker.open_member("billing", "leaving")
    await quiet(store, leaving)
    pending = asyncio.create_task(publish(broker, "R1"))
    await asyncio.sleep(0)  # the publish queued its append and kicked the claim
    assert leaving.kicked is not None
    await broker.close_member(leaving)  # before the dispatch loop took the claim
    nid = await pending
    states = await store.group_states(nid)
    assert states["billing"].state is DeliveryState.PENDING
    assert states["billing"].attempts == 1  # leased by the kicked claim, then released
    staying = await broker.open_member("billing", "staying")
    async with asyncio.timeout(BOUND):
        [lease] = await staying.next_batch()
    assert lease.notification_id == nid and lease.attempt == 2


async def test_only_an_append_that_would_commit_alone_kicks(store: SQLiteStore) -> None:
    """Appends queued together commit together anyway: only the first, queued to an idle
    worker, kicks; claims made once woken then cover the rest."""
    kicks: list[str] = []

    async def append(payment_id: str) -> None:
        notification = new_notification(make_notification(payment_id))
        receipt = ReceiptRecord(received_at=NOW)
        groups = (GroupSpec("billing"),)
        await store.append(
            notification, receipt, groups, on_queued=lambda: kicks.append(payment_id)
        )

    # Another connection holds the write lock: the worker waits in B0's batch while B1-B3 are
    # queued, so none of them can find it idle again (on a busy machine it could otherwise
    # finish B0 before B1 is queued).
    with write_locked(store.path):
        tasks = [asyncio.create_task(append(f"B{i}")) for i in range(4)]
        await queued()
    await asyncio.gather(*tasks)
    assert kicks == ["B0"]
    await quiet(store)
    await append("B4")
    assert kicks == ["B0", "B4"]


async def test_news_after_a_kick_outlives_the_step_that_takes_it() -> None:
    """A kicked claim sees what was queued before the kick; a wake-up after it must make the
    dispatch loop claim once more, a wake-up before it must not."""
    settings = MemberSettings(GroupSpec("billing"), "m", 4, 30.0, frozenset())
    member = Member("unit/m/1", settings)
    claim: asyncio.Future[list[Lease]] = asyncio.get_running_loop().create_future()
    member.wake(due_now=True)
    member.kick(4, claim)
    assert member.begin_step() == (4, claim)
    assert not member._news.is_set()  # the kick's own news: the claim covers it
    member.kick(4, claim)
    member.wake(due_now=True)  # e.g. a nack, after the claim was queued
    assert member.begin_step() == (4, claim)
    assert member._news.is_set()  # so the loop claims again instead of waiting
    assert member.begin_step() is None
    assert not member._news.is_set()  # a claim submitted now sees everything


async def test_a_receipt_ahead_of_the_hubs_clock_is_delivered_when_due(tmp_path: Path) -> None:
    """A bridge whose clock runs ahead stamps a receipt the hub's claim cannot take yet: the
    empty claim makes the loop ask when it falls due, not wait for the safety poll."""
    store = SQLiteStore(tmp_path / "skew.db")
    await store.open()
    config = HubConfig(groups=(GroupSpec("billing"),), poll_interval=5.0, hub_id="unit")
    b = Broker(config, store)
    await b.start()
    try:
        member = await b.open_member("billing", "m")
        await quiet(store, member)
        loop = asyncio.get_running_loop()
        started = loop.time()
        ahead = ReceiptRecord(received_at=time.time() + 0.2)
        await b.publish(new_notification(make_notification("S1")), ahead, 0)
        async with asyncio.timeout(BOUND):
            [lease] = await member.next_batch()
        assert loop.time() - started < 2.5  # due 0.2 s later; the safety poll is at 5 s
        assert lease.attempt == 1
    finally:
        await b.shutdown(drain=0)
        await b.close()
        await store.close()


async def test_no_kick_while_the_loop_holds_a_claim_it_has_not_handed_out(
    broker: Broker, store: SQLiteStore
) -> None:
    """The first publish returns as its batch commits, before the dispatch loop has taken its
    claim's lease: a second publish right then finds the worker idle, but must not claim for
    the member again (both claims would fill the same free slot)."""
    member = await broker.open_member("billing", "b", max_in_flight=1)
    await quiet(store, member)
    first = await publish(broker, "O1")
    await publish(broker, "O2")  # at once: the loop has not handed out O1's lease yet
    [lease] = await member.next_batch()
    await asyncio.sleep(0.05)  # whatever else the loop would claim, it has claimed now
    [stats] = await store.group_stats(NOW, ["billing"])
    assert lease.notification_id == first
    assert member.in_flight == 1 and stats.leased == 1
