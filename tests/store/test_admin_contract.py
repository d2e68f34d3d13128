"""The store contract of the operator's verbs, on every backend: group statistics, finding a
notification with its receipts, deliveries and history, dead letters, replay, and purge of history.
"""

from __future__ import annotations

import sqlite3

import psycopg
import pytest

from paynotify_hub.domain import (
    ActionStatus,
    DeliveryEvent,
    DeliveryRecord,
    DeliveryState,
    GroupDelivery,
    GroupStats,
    HistoryKind,
    NotificationRecord,
    RetryPolicy,
)
from paynotify_hub.store import Store
from paynotify_hub.store.postgres import PostgresStore
from paynotify_hub.store.sqlite import SQLiteStore
from tests.store.test_contract import (
    ALL,
    GROUPS,
    LEASE,
    LEDGER,
    ORDERS,
    POLICY,
    T0,
    add,
    claim_one,
    note,
    receipt,
    state_of,
)

LEASED, ACKED, NACKED = HistoryKind.LEASED, HistoryKind.ACKED, HistoryKind.NACKED
REJECTED, EXPIRED, RELEASED = HistoryKind.REJECTED, HistoryKind.EXPIRED, HistoryKind.RELEASED
REPLAYED = HistoryKind.REPLAYED
PENDING, DEAD = DeliveryState.PENDING, DeliveryState.DEAD


async def show(store: Store, n: int) -> NotificationRecord:
    """The record of `note(n)`, found by its paymentRequestId."""
    [record] = await store.find_notifications(f"req-{n}", 10)
    return record


def delivery(record: NotificationRecord, group: str) -> DeliveryRecord:
    [found] = [d for d in record.deliveries if d.group == group]
    return found


def kinds(record: NotificationRecord, group: str) -> list[tuple[HistoryKind, int, DeliveryState]]:
    return [(e.kind, e.attempt, e.state) for e in delivery(record, group).history]


async def history_rows(store: Store) -> int:
    """Rows in delivery_history, read beside the store (no verb counts them)."""
    if isinstance(store, SQLiteStore):
        with sqlite3.connect(store.path) as conn:
            return int(conn.execute("SELECT count(*) FROM delivery_history").fetchone()[0])
    assert isinstance(store, PostgresStore)
    async with await psycopg.AsyncConnection.connect(store._conninfo) as conn:
        cur = await conn.execute("SELECT count(*) FROM delivery_history")
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


# group_stats


async def test_group_stats_counts_every_state(store: Store) -> None:
    ids = [await add(store, n, T0 + n) for n in range(6)]
    leases = await store.claim("orders", "m1", 4, LEASE, ALL, T0 + 10)
    by_id = {x.notification_id: x for x in leases}
    await store.ack("orders", ids[0], by_id[ids[0]].token, T0 + 11)
    await store.reject("orders", ids[1], by_id[ids[1]].token, "bad", T0 + 11)
    await store.nack("orders", ids[2], by_id[ids[2]].token, T0 + 11, 100.0, POLICY)
    # ids[3] stays leased; ids[4] and ids[5] pending and due.
    [orders, ledger, nobody] = await store.group_stats(T0 + 20, ["orders", "ledger", "nobody"])
    assert orders == GroupStats(
        "orders",
        pending_due=2,
        pending_later=1,
        leased=1,
        dead=1,
        acked=1,
        oldest_unacked_at=T0 + 2,  # ids[2], pending again; ids[1] is dead, counted apart
    )
    assert orders.pending == 3
    assert orders.oldest_unacked_age(T0 + 20) == 18.0
    assert ledger == GroupStats("ledger", pending_due=6, acked=0, oldest_unacked_at=T0)
    assert nobody == GroupStats("nobody", acked=0)
    assert nobody.oldest_unacked_age(T0) is None


async def test_group_stats_without_acked_counts_and_not_yet_due(store: Store) -> None:
    await add(store, 1, T0 + 50)
    [orders] = await store.group_stats(T0, ["orders"], count_acked=False)
    assert orders == GroupStats("orders", pending_later=1, oldest_unacked_at=T0 + 50)
    assert orders.oldest_unacked_age(T0) == 0.0  # never negative
    assert await store.group_stats(T0, []) == []


async def test_group_stats_oldest_counts_leased_deliveries(store: Store) -> None:
    first = await add(store, 1, T0)
    await add(store, 2, T0 + 5)
    lease = await claim_one(store, "orders", T0 + 6)
    assert lease.notification_id == first
    [orders] = await store.group_stats(T0 + 6, ["orders"])
    assert (orders.leased, orders.pending_due, orders.oldest_unacked_at) == (1, 1, T0)
    await store.ack("orders", first, lease.token, T0 + 7)
    [orders] = await store.group_stats(T0 + 7, ["orders"])
    assert (orders.leased, orders.acked, orders.oldest_unacked_at) == (0, 1, T0 + 5)


# find_notifications


async def test_find_by_payment_id_or_request_id_with_every_receipt(store: Store) -> None:
    nid = await add(store, 1)
    await store.append(note(1), receipt(T0 + 120), GROUPS)
    other = await store.append(note(1, status="F"), receipt(T0 + 60), GROUPS)
    by_payment = await store.find_notifications("2024000000000001", 10)
    by_request = await store.find_notifications("req-1", 10)
    assert by_payment == by_request
    assert [r.notification_id for r in by_payment] == [nid, other.notification_id]
    record = by_payment[0]
    assert record.identity == note(1).identity
    assert (record.notify_type, record.result_status) == ("PAYMENT_RESULT", "S")
    assert (record.payment_id, record.payment_request_id) == ("2024000000000001", "req-1")
    assert (record.send_count, record.first_received_at, record.last_received_at) == (
        2,
        T0,
        T0 + 120,
    )
    assert record.payload == note(1).payload
    assert [r.received_at for r in record.receipts] == [T0, T0 + 120]
    assert record.receipts[0] == receipt(T0)
    assert [d.group for d in record.deliveries] == ["ledger", "orders"]
    assert delivery(record, "orders") == DeliveryRecord("orders", PENDING, 0, T0)
    assert await store.find_notifications("2024000000000001", 1) == by_payment[:1]


async def test_find_nothing(store: Store) -> None:
    await add(store, 1)
    assert await store.find_notifications("nope", 10) == []
    assert await store.find_notifications("", 10) == []
    assert await store.find_notifications("req-1", 0) == []


async def test_find_shows_the_current_lease_and_settled_states(store: Store) -> None:
    nid = await add(store, 1)
    lease = await claim_one(store, "orders", T0 + 1, member="hub/billing-1/ab")
    record = await show(store, 1)
    assert delivery(record, "orders") == DeliveryRecord(
        "orders",
        DeliveryState.LEASED,
        1,
        T0,
        lease_member="hub/billing-1/ab",
        lease_expires_at=T0 + 1 + LEASE,
        history=delivery(record, "orders").history,
    )
    await store.ack("orders", nid, lease.token, T0 + 2)
    ledger = await claim_one(store, "ledger", T0 + 3)
    await store.reject("ledger", nid, ledger.token, "unknown order", T0 + 4)
    record = await show(store, 1)
    acked, dead = delivery(record, "orders"), delivery(record, "ledger")
    assert (acked.state, acked.acked_at, acked.lease_member, acked.lease_expires_at) == (
        DeliveryState.ACKED,
        T0 + 2,
        "",
        None,
    )
    assert (dead.state, dead.dead_at, dead.dead_reason) == (DEAD, T0 + 4, "unknown order")


# history: every kind of ending


async def test_ack_many_answers_each_ack_in_order_and_records_each_ack_once(store: Store) -> None:
    first, second, third = [await add(store, n) for n in (1, 2, 3)]
    leases = {x.notification_id: x for x in await store.claim("orders", "m1", 3, LEASE, ALL, T0)}
    acks = [
        (first, leases[first].token),
        (second, "not-the-token"),
        (first, leases[first].token),  # the same ack twice in one request
        (third + 1000, "never-issued"),
        (third, leases[third].token),
    ]
    ok, stale, unknown = ActionStatus.OK, ActionStatus.STALE, ActionStatus.UNKNOWN
    assert await store.ack_many("orders", acks, T0 + 2) == [ok, stale, stale, unknown, ok]
    assert await store.ack_many("orders", [], T0 + 3) == []
    acked, leased = DeliveryState.ACKED, DeliveryState.LEASED
    for nid, state in ((first, acked), (second, leased), (third, acked)):
        assert await state_of(store, nid) == GroupDelivery(state, 1)
    for n in (1, 3):
        assert delivery(await show(store, n), "orders").history == (
            DeliveryEvent("orders", LEASED, T0, 1, "m1", DeliveryState.LEASED, T0 + LEASE),
            DeliveryEvent("orders", ACKED, T0 + 2, 1, "m1", DeliveryState.ACKED),
        )
    assert [e.kind for e in delivery(await show(store, 2), "orders").history] == [LEASED]


async def test_history_of_a_lease_acked(store: Store) -> None:
    nid = await add(store, 1)
    lease = await claim_one(store, "orders", T0 + 1, member="m1")
    await store.extend("orders", nid, lease.token, T0 + 500)  # not history
    await store.ack("orders", nid, lease.token, T0 + 2)
    history = delivery(await show(store, 1), "orders").history
    assert history == (
        DeliveryEvent("orders", LEASED, T0 + 1, 1, "m1", DeliveryState.LEASED, T0 + 1 + LEASE),
        DeliveryEvent("orders", ACKED, T0 + 2, 1, "m1", DeliveryState.ACKED),
    )
    assert delivery(await show(store, 1), "ledger").history == ()


async def test_history_of_nacks_until_dead(store: Store) -> None:
    nid = await add(store, 1)
    now = T0
    for member in ("m1", "m2", "m3"):
        lease = await claim_one(store, "orders", now, member=member)
        await store.nack("orders", nid, lease.token, now + 1, 5.0, POLICY)
        now += 10
    history = delivery(await show(store, 1), "orders").history
    assert [(e.kind, e.attempt, e.member, e.state) for e in history] == [
        (LEASED, 1, "m1", DeliveryState.LEASED),
        (NACKED, 1, "m1", PENDING),
        (LEASED, 2, "m2", DeliveryState.LEASED),
        (NACKED, 2, "m2", PENDING),
        (LEASED, 3, "m3", DeliveryState.LEASED),
        (NACKED, 3, "m3", DEAD),
    ]
    assert (history[1].at, history[1].due_at) == (T0 + 1, T0 + 6)
    assert history[5].due_at is None
    assert history[5].detail.startswith("max attempts reached")


async def test_history_of_a_reject(store: Store) -> None:
    nid = await add(store, 1)
    lease = await claim_one(store, "orders", T0, member="m1")
    await store.reject("orders", nid, lease.token, "no such order", T0 + 3)
    last = delivery(await show(store, 1), "orders").history[-1]
    assert last == DeliveryEvent("orders", REJECTED, T0 + 3, 1, "m1", DEAD, detail="no such order")


async def test_history_of_expired_and_released_leases(store: Store) -> None:
    await add(store, 1)
    await claim_one(store, "orders", T0, member="m1")
    await claim_one(store, "ledger", T0, member="m2")
    assert await store.expire_leases(T0 + LEASE, POLICY) == frozenset({"orders", "ledger"})
    await claim_one(store, "orders", T0 + 100, member="m3")
    assert await store.release("orders", "m3", T0 + 101, POLICY) == 1
    record = await show(store, 1)
    orders = delivery(record, "orders").history
    assert [(e.kind, e.attempt, e.member, e.at) for e in orders] == [
        (LEASED, 1, "m1", T0),
        (EXPIRED, 1, "m1", T0 + LEASE),
        (LEASED, 2, "m3", T0 + 100),
        (RELEASED, 2, "m3", T0 + 101),
    ]
    assert orders[1].due_at == T0 + LEASE + POLICY.backoff(1)
    assert orders[3].due_at == T0 + 101 + POLICY.backoff(2)
    assert kinds(record, "ledger") == [
        (LEASED, 1, DeliveryState.LEASED),
        (EXPIRED, 1, PENDING),
    ]


async def test_history_of_expiry_and_release_out_of_attempts(store: Store) -> None:
    one = RetryPolicy(min_backoff=1.0, max_backoff=1.0, max_attempts=1)
    await add(store, 1)
    await claim_one(store, "orders", T0, member="m1")
    await claim_one(store, "ledger", T0, member="m1")
    await store.expire_leases(T0 + LEASE, one)  # both expire
    record = await show(store, 1)
    assert kinds(record, "orders")[-1] == (EXPIRED, 1, DEAD)
    await add(store, 2)
    await claim_one(store, "orders", T0 + 100, member="m9")
    await store.release("orders", "m9", T0 + 101, one)
    assert kinds(await show(store, 2), "orders")[-1] == (RELEASED, 1, DEAD)


# dead_letters


async def make_dead(store: Store, nid: int, group: str, reason: str, now: float) -> None:
    leases = await store.claim(group, "m1", 100, LEASE, ALL, now)
    [lease] = [x for x in leases if x.notification_id == nid]
    assert await store.reject(group, nid, lease.token, reason, now) is ActionStatus.OK
    for other in leases:
        if other.notification_id != nid:
            await store.nack(group, other.notification_id, other.token, now, 0.0, POLICY)


async def test_dead_letters_lists_payload_reason_and_pages(store: Store) -> None:
    first, second, alive = [await add(store, n) for n in (1, 2, 3)]
    await make_dead(store, first, "orders", "bad order", T0 + 1)
    await make_dead(store, first, "ledger", "bad ledger", T0 + 2)
    await make_dead(store, second, "orders", "worse", T0 + 3)
    everything = await store.dead_letters(None, 0, 10)
    assert [(d.notification_id, d.group, d.reason) for d in everything] == [
        (first, "ledger", "bad ledger"),
        (first, "orders", "bad order"),
        (second, "orders", "worse"),
    ]
    letter = everything[1]
    assert letter.payload == note(1).payload
    assert (letter.attempts, letter.dead_at, letter.first_received_at) == (1, T0 + 1, T0)
    assert (letter.payment_id, letter.payment_request_id) == ("2024000000000001", "req-1")
    assert letter.notify_type == "PAYMENT_RESULT"
    assert [d.group for d in await store.dead_letters("orders", 0, 10)] == ["orders", "orders"]
    page1 = await store.dead_letters(None, 0, 1)
    page2 = await store.dead_letters(None, first, 1, after_group=page1[0].group)
    page3 = await store.dead_letters(None, first, 1, after_group=page2[0].group)
    assert page1 + page2 + page3 == everything
    assert await store.dead_letters(None, second, 10, after_group="orders") == []
    assert await store.dead_letters("orders", first, 10, after_group="orders") == everything[2:]
    assert await store.dead_letters(None, 0, 0) == []
    assert alive not in {d.notification_id for d in everything}


async def test_dead_letters_include_out_of_attempts(store: Store) -> None:
    one = RetryPolicy(min_backoff=1.0, max_backoff=1.0, max_attempts=1)
    nid = await add(store, 1, T0, (ORDERS,))
    lease = await claim_one(store, "orders", T0)
    await store.nack("orders", nid, lease.token, T0 + 1, None, one)
    [letter] = await store.dead_letters("orders", 0, 10)
    assert (letter.notification_id, letter.attempts, letter.dead_at) == (nid, 1, T0 + 1)
    assert letter.reason.startswith("max attempts reached")


# replay


async def test_replay_a_dead_letter(store: Store) -> None:
    nid = await add(store, 1)
    await make_dead(store, nid, "orders", "bad", T0 + 1)
    assert await store.replay("orders", nid, T0 + 50) is ActionStatus.OK
    assert await state_of(store, nid) == GroupDelivery(PENDING, 0)
    assert await store.dead_letters(None, 0, 10) == []
    assert await store.next_due("orders", ALL) == T0 + 50
    lease = await claim_one(store, "orders", T0 + 50, member="m2")
    assert lease.attempt == 1
    await store.ack("orders", nid, lease.token, T0 + 51)
    record = await show(store, 1)
    history = delivery(record, "orders").history
    assert [(e.kind, e.attempt, e.state) for e in history] == [
        (LEASED, 1, DeliveryState.LEASED),
        (REJECTED, 1, DEAD),
        (REPLAYED, 1, PENDING),
        (LEASED, 1, DeliveryState.LEASED),
        (ACKED, 1, DeliveryState.ACKED),
    ]
    assert (history[2].at, history[2].due_at, history[2].member) == (T0 + 50, T0 + 50, "")
    assert history[2].detail
    assert delivery(record, "orders").dead_reason == ""


async def test_replay_refuses_what_is_not_a_dead_letter(store: Store) -> None:
    nid = await add(store, 1)
    assert await store.replay("orders", nid, T0) is ActionStatus.STALE  # pending
    await claim_one(store, "orders", T0)
    assert await store.replay("orders", nid, T0) is ActionStatus.STALE  # leased
    assert await store.replay("orders", nid + 100, T0) is ActionStatus.UNKNOWN
    assert await store.replay("nobody", nid, T0) is ActionStatus.UNKNOWN
    assert kinds(await show(store, 1), "orders") == [(LEASED, 1, DeliveryState.LEASED)]


async def test_replay_since_resets_every_state_from_that_time_on(store: Store) -> None:
    before = await add(store, 1, T0)
    acked, leased, dead, pending = [await add(store, n, T0 + 100 + n) for n in (2, 3, 4, 5)]
    claimed = await store.claim("orders", "m1", 5, LEASE, ALL, T0 + 200)
    leases = {x.notification_id: x for x in claimed}
    for nid in (before, acked):
        await store.ack("orders", nid, leases[nid].token, T0 + 200)
    await store.reject("orders", dead, leases[dead].token, "bad", T0 + 200)
    await store.nack("orders", pending, leases[pending].token, T0 + 200, 500.0, POLICY)
    count = await store.replay_since("orders", T0 + 100, T0 + 300)
    assert count == 4
    for n, nid in zip((2, 3, 4, 5), (acked, leased, dead, pending), strict=True):
        assert await state_of(store, nid) == GroupDelivery(PENDING, 0)
        assert kinds(await show(store, n), "orders")[-1][0] is REPLAYED
    assert await state_of(store, before) == GroupDelivery(DeliveryState.ACKED, 1)
    assert await state_of(store, acked, "ledger") == GroupDelivery(PENDING, 0)  # other group
    assert await store.ack("orders", leased, leases[leased].token, T0 + 301) is ActionStatus.STALE
    again = await store.claim("orders", "m2", 10, LEASE, ALL, T0 + 300)
    assert sorted(x.notification_id for x in again) == [acked, leased, dead, pending]
    assert {x.attempt for x in again} == {1}
    [orders] = await store.group_stats(T0 + 300, ["orders"])
    assert (orders.leased, orders.dead, orders.acked) == (4, 0, 1)
    replayed = delivery(await show(store, 2), "orders").history[2]
    assert (replayed.attempt, replayed.due_at) == (1, T0 + 300)
    assert "since" in replayed.detail
    assert await store.replay_since("orders", T0 + 1000, T0 + 300) == 0


# purge takes the history with it


async def test_purge_deletes_the_history_with_the_notification(store: Store) -> None:
    nid = await add(store, 1, T0, (ORDERS,))
    kept = await add(store, 2, T0, (ORDERS, LEDGER))
    for lease in await store.claim("orders", "m1", 10, LEASE, ALL, T0):
        await store.ack("orders", lease.notification_id, lease.token, T0 + 1)
    assert await history_rows(store) == 4
    assert await store.purge_settled(T0 + 10, 10) == 1
    assert await store.find_notifications("req-1", 10) == []
    assert await history_rows(store) == 2
    assert len(delivery(await show(store, 2), "orders").history) == 2
    assert nid != kept


@pytest.mark.parametrize("limit", [1, 3])
async def test_history_of_a_multi_lease_claim(store: Store, limit: int) -> None:
    ids = [await add(store, n) for n in range(3)]
    leases = await store.claim("orders", "m1", limit, LEASE, ALL, T0)
    assert len(leases) == limit
    for n in range(limit):
        assert kinds(await show(store, n), "orders") == [(LEASED, 1, DeliveryState.LEASED)]
    for n in range(limit, len(ids)):
        assert kinds(await show(store, n), "orders") == []
