"""The store contract: every backend answers these the same way.

Times are injected (T0 plus offsets), never slept on. SQLite-only checks (durability pragmas, a
killed process) take the `sqlite_store` fixture, which skips for other backends.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from paynotify_hub.domain import (
    ActionStatus,
    DeliveryState,
    GroupDelivery,
    GroupSpec,
    Lease,
    NewNotification,
    ReceiptRecord,
    RetryPolicy,
    identity_of,
)
from paynotify_hub.store import Store, StoreError
from paynotify_hub.store.sqlite import BUSY_TIMEOUT_MS, SCHEMA_VERSION, SQLiteStore

T0 = 1_700_000_000.0
LEASE = 30.0
PAYMENT = "PAYMENT_RESULT"
REFUND = "REFUND_RESULT"
ALL: frozenset[str] = frozenset()
ORDERS = GroupSpec("orders")
LEDGER = GroupSpec("ledger", required=False)
REFUNDS = GroupSpec("refunds", notify_types=frozenset({REFUND}))
GROUPS = (ORDERS, LEDGER, REFUNDS)
POLICY = RetryPolicy(min_backoff=2.0, max_backoff=10.0, max_attempts=3)
PENDING0 = GroupDelivery(DeliveryState.PENDING, 0)


def note(n: int, notify_type: str = PAYMENT, status: str = "S") -> NewNotification:
    payment_id = f"2024{n:012d}"
    return NewNotification(
        identity=identity_of(notify_type, payment_id, f"req-{n}", status),
        notify_type=notify_type,
        payment_request_id=f"req-{n}",
        payment_id=payment_id,
        result_status=status,
        payload=f'{{"n": {n}, "status": "{status}"}}'.encode(),
    )


def receipt(at: float = T0) -> ReceiptRecord:
    return ReceiptRecord(received_at=at, client_id="client-1", request_time="t", request_id="r")


async def add(store: Store, n: int, at: float = T0, groups: tuple[GroupSpec, ...] = GROUPS) -> int:
    result = await store.append(note(n), receipt(at), groups)
    return result.notification_id


async def claim_one(
    store: Store, group: str = "orders", now: float = T0, member: str = "m1"
) -> Lease:
    leases = await store.claim(group, member, 1, LEASE, ALL, now)
    assert len(leases) == 1
    return leases[0]


async def state_of(store: Store, nid: int, group: str = "orders") -> GroupDelivery:
    return (await store.group_states(nid))[group]


@pytest.fixture
def sqlite_store(store: Store) -> SQLiteStore:
    if not isinstance(store, SQLiteStore):
        pytest.skip(f"SQLite-specific, not for {type(store).__name__}")
    return store


def dead_letter_of(store: SQLiteStore, nid: int, group: str) -> tuple[bytes, str]:
    """Payload and reason of a dead letter, read beside the store: no Protocol verb reads them."""
    with sqlite3.connect(store.path) as conn:
        row = conn.execute(
            "SELECT n.payload, d.dead_reason FROM notifications n JOIN deliveries d"
            " ON d.notification_id = n.id WHERE n.id = ? AND d.group_name = ?",
            (nid, group),
        ).fetchone()
    return bytes(row[0]), str(row[1])


# append


async def test_append_new_fans_out_to_groups_that_want_the_type(store: Store) -> None:
    result = await store.append(note(1), receipt(), GROUPS)
    assert result.created
    assert result.send_count == 1
    assert result.first_received_at == T0
    assert dict(result.groups) == {"orders": PENDING0, "ledger": PENDING0}
    assert dict(await store.group_states(result.notification_id)) == dict(result.groups)


async def test_append_refund_reaches_the_refund_group(store: Store) -> None:
    result = await store.append(note(1, REFUND), receipt(), GROUPS)
    assert set(result.groups) == {"orders", "ledger", "refunds"}


async def test_append_same_identity_is_stored_once(store: Store) -> None:
    first = await store.append(note(1), receipt(T0), GROUPS)
    again = await store.append(note(1), receipt(T0 + 120), GROUPS)
    assert not again.created
    assert again.notification_id == first.notification_id
    assert again.send_count == 2
    assert again.first_received_at == T0
    assert dict(again.groups) == dict(first.groups)
    leases = await store.claim("orders", "m1", 10, LEASE, ALL, T0 + 1000)
    assert [x.notification_id for x in leases] == [first.notification_id]
    assert leases[0].send_count == 2


async def test_other_result_status_is_another_notification(store: Store) -> None:
    failed = await store.append(note(1, status="F"), receipt(), GROUPS)
    succeeded = await store.append(note(1, status="S"), receipt(), GROUPS)
    assert succeeded.created
    assert succeeded.notification_id != failed.notification_id


async def test_resend_leaves_acked_and_leased_deliveries_alone(store: Store) -> None:
    nid = await add(store, 1)
    lease = await claim_one(store, "orders")
    await claim_one(store, "ledger")
    assert await store.ack("orders", nid, lease.token, T0 + 1) is ActionStatus.OK
    again = await store.append(note(1), receipt(T0 + 600), GROUPS)
    assert again.groups["orders"] == GroupDelivery(DeliveryState.ACKED, 1)
    assert again.groups["ledger"] == GroupDelivery(DeliveryState.LEASED, 1)
    assert await store.claim("orders", "m1", 10, LEASE, ALL, T0 + 10_000) == []


async def test_group_declared_later_gets_a_delivery_on_the_next_append(store: Store) -> None:
    nid = await add(store, 1, T0, (ORDERS,))
    audit = GroupSpec("audit")
    again = await store.append(note(1), receipt(T0 + 120), (ORDERS, audit, REFUNDS))
    assert again.groups["audit"] == PENDING0
    assert "refunds" not in again.groups
    assert await store.claim("audit", "m1", 10, LEASE, ALL, T0 + 119) == []
    lease = await claim_one(store, "audit", T0 + 120)
    assert (lease.notification_id, lease.send_count) == (nid, 2)


async def test_group_states_of_unknown_notification_is_empty(store: Store) -> None:
    assert dict(await store.group_states(424242)) == {}


# claim


async def test_claim_returns_a_full_lease(store: Store) -> None:
    nid = await add(store, 1)
    lease = await claim_one(store, now=T0 + 5)
    assert lease.notification_id == nid
    assert lease.group == "orders"
    assert lease.token
    assert lease.attempt == 1
    assert lease.lease_expires_at == T0 + 5 + LEASE
    assert lease.payload == note(1).payload
    assert lease.notify_type == PAYMENT
    assert lease.send_count == 1
    assert lease.first_received_at == T0
    assert await state_of(store, nid) == GroupDelivery(DeliveryState.LEASED, 1)
    assert await state_of(store, nid, "ledger") == PENDING0


async def test_claim_is_oldest_first_and_respects_limit(store: Store) -> None:
    ids = [await add(store, n) for n in range(5)]
    first = await store.claim("orders", "m1", 2, LEASE, ALL, T0)
    second = await store.claim("orders", "m1", 2, LEASE, ALL, T0)
    rest = await store.claim("orders", "m1", 10, LEASE, ALL, T0)
    assert [x.notification_id for x in first + second + rest] == ids
    assert await store.claim("orders", "m1", 10, LEASE, ALL, T0) == []
    assert await store.claim("ledger", "m1", 0, LEASE, ALL, T0) == []


async def test_claim_waits_for_available_at(store: Store) -> None:
    nid = await add(store, 1, T0 + 10)
    assert await store.claim("orders", "m1", 10, LEASE, ALL, T0 + 9.999) == []
    assert (await claim_one(store, now=T0 + 10)).notification_id == nid


async def test_claim_filters_by_notify_type(store: Store) -> None:
    payment = await add(store, 1)
    refund = (await store.append(note(2, REFUND), receipt(), GROUPS)).notification_id
    only_refunds = await store.claim("orders", "m1", 10, LEASE, frozenset({REFUND}), T0)
    assert [x.notification_id for x in only_refunds] == [refund]
    both = frozenset({REFUND, PAYMENT})
    assert [x.notification_id for x in await store.claim("orders", "m1", 10, LEASE, both, T0)] == [
        payment
    ]


async def test_concurrent_claims_never_share_a_delivery(store: Store) -> None:
    ids = {await add(store, n) for n in range(10)}
    one, two = await asyncio.gather(
        store.claim("orders", "m1", 6, LEASE, ALL, T0),
        store.claim("orders", "m2", 6, LEASE, ALL, T0),
    )
    got_one = {x.notification_id for x in one}
    got_two = {x.notification_id for x in two}
    assert not got_one & got_two
    assert got_one | got_two == ids
    assert len(one) + len(two) == 10


async def test_claim_tokens_differ_per_lease(store: Store) -> None:
    for n in range(3):
        await add(store, n)
    leases = await store.claim("orders", "m1", 3, LEASE, ALL, T0)
    assert len({x.token for x in leases}) == 3
    # 64 bits from the CSPRNG each, as 16 hex digits: unguessable, and never a cut-off piece.
    assert all(re.fullmatch("[0-9a-f]{16}", x.token) for x in leases), leases


# ack, nack, reject, extend


async def test_ack_settles_and_a_second_ack_is_stale(store: Store) -> None:
    nid = await add(store, 1)
    lease = await claim_one(store)
    assert await store.ack("orders", nid, lease.token, T0 + 1) is ActionStatus.OK
    assert await state_of(store, nid) == GroupDelivery(DeliveryState.ACKED, 1)
    assert await store.ack("orders", nid, lease.token, T0 + 2) is ActionStatus.STALE


async def test_actions_on_unknown_deliveries(store: Store) -> None:
    nid = await add(store, 1)
    for group, target in (("orders", nid + 1000), ("nobody", nid)):
        assert await store.ack(group, target, "t", T0) is ActionStatus.UNKNOWN
        assert await store.nack(group, target, "t", T0, None, POLICY) is ActionStatus.UNKNOWN
        assert await store.reject(group, target, "t", "bad", T0) is ActionStatus.UNKNOWN
        assert await store.extend(group, target, "t", T0 + 60) is ActionStatus.UNKNOWN


async def test_actions_on_a_pending_delivery_are_stale(store: Store) -> None:
    nid = await add(store, 1)
    assert await store.ack("orders", nid, "t", T0) is ActionStatus.STALE
    assert await store.extend("orders", nid, "t", T0 + 60) is ActionStatus.STALE
    assert await state_of(store, nid) == PENDING0


async def test_actions_with_a_wrong_token_are_stale(store: Store) -> None:
    nid = await add(store, 1)
    await claim_one(store)
    assert await store.ack("orders", nid, "not-the-token", T0) is ActionStatus.STALE
    assert await store.nack("orders", nid, "x", T0, None, POLICY) is ActionStatus.STALE
    assert await store.reject("orders", nid, "x", "bad", T0) is ActionStatus.STALE
    assert await store.extend("orders", nid, "x", T0 + 60) is ActionStatus.STALE
    assert await state_of(store, nid) == GroupDelivery(DeliveryState.LEASED, 1)


async def test_token_of_an_expired_lease_is_stale_after_reclaim(store: Store) -> None:
    nid = await add(store, 1)
    old = await claim_one(store, member="m1")
    assert await store.expire_leases(T0 + LEASE, POLICY) == frozenset({"orders"})
    new = await claim_one(store, now=T0 + LEASE + POLICY.backoff(1), member="m2")
    assert new.token != old.token
    assert new.attempt == 2
    assert await store.ack("orders", nid, old.token, T0 + 40) is ActionStatus.STALE
    assert await store.nack("orders", nid, old.token, T0 + 40, 0.0, POLICY) is ActionStatus.STALE
    assert await store.reject("orders", nid, old.token, "x", T0 + 40) is ActionStatus.STALE
    assert await store.extend("orders", nid, old.token, T0 + 99) is ActionStatus.STALE
    assert await store.ack("orders", nid, new.token, T0 + 40) is ActionStatus.OK


async def test_nack_with_explicit_delay(store: Store) -> None:
    nid = await add(store, 1)
    lease = await claim_one(store)
    assert await store.nack("orders", nid, lease.token, T0 + 1, 7.5, POLICY) is ActionStatus.OK
    assert await state_of(store, nid) == GroupDelivery(DeliveryState.PENDING, 1)
    assert await store.next_due("orders", ALL) == T0 + 8.5
    assert await store.claim("orders", "m1", 1, LEASE, ALL, T0 + 8.49) == []
    assert (await claim_one(store, now=T0 + 8.5)).attempt == 2
    assert await store.ack("orders", nid, lease.token, T0 + 9) is ActionStatus.STALE


async def test_nack_with_zero_delay_is_due_at_once(store: Store) -> None:
    nid = await add(store, 1)
    lease = await claim_one(store)
    assert await store.nack("orders", nid, lease.token, T0 + 3, 0.0, POLICY) is ActionStatus.OK
    assert await store.next_due("orders", ALL) == T0 + 3


async def test_nack_without_delay_follows_the_policy_backoff(store: Store) -> None:
    nid = await add(store, 1)
    policy = RetryPolicy(min_backoff=2.0, max_backoff=10.0, max_attempts=10)
    now = T0
    for attempt, backoff in ((1, 2.0), (2, 4.0), (3, 8.0), (4, 10.0)):
        lease = await claim_one(store, now=now)
        assert lease.attempt == attempt
        assert (
            await store.nack("orders", nid, lease.token, now + 1, None, policy) is ActionStatus.OK
        )
        assert await store.next_due("orders", ALL) == now + 1 + backoff
        now = now + 1 + backoff


async def test_nack_at_max_attempts_dead_letters_and_keeps_the_payload(store: Store) -> None:
    nid = await add(store, 1)
    now = T0
    for _ in range(POLICY.max_attempts - 1):
        lease = await claim_one(store, now=now)
        assert await store.nack("orders", nid, lease.token, now, 0.0, POLICY) is ActionStatus.OK
    lease = await claim_one(store, now=now)
    assert lease.attempt == POLICY.max_attempts
    assert await store.nack("orders", nid, lease.token, now, 0.0, POLICY) is ActionStatus.OK
    assert await state_of(store, nid) == GroupDelivery(DeliveryState.DEAD, POLICY.max_attempts)
    assert await store.claim("orders", "m1", 10, LEASE, ALL, now + 10_000) == []
    assert await store.next_due("orders", ALL) is None
    if isinstance(store, SQLiteStore):
        assert dead_letter_of(store, nid, "orders") == (note(1).payload, "max attempts reached (3)")


async def test_reject_dead_letters_with_the_reason(store: Store) -> None:
    nid = await add(store, 1)
    lease = await claim_one(store)
    assert await store.reject("orders", nid, lease.token, "no such order", T0) is ActionStatus.OK
    assert await state_of(store, nid) == GroupDelivery(DeliveryState.DEAD, 1)
    assert await state_of(store, nid, "ledger") == PENDING0
    assert await store.ack("orders", nid, lease.token, T0) is ActionStatus.STALE
    assert await store.claim("orders", "m1", 10, LEASE, ALL, T0 + 10_000) == []
    if isinstance(store, SQLiteStore):
        assert dead_letter_of(store, nid, "orders") == (note(1).payload, "no such order")


async def test_extend_moves_the_lease_expiry(store: Store) -> None:
    nid = await add(store, 1)
    lease = await claim_one(store)
    assert await store.extend("orders", nid, lease.token, T0 + 100) is ActionStatus.OK
    assert await store.expire_leases(T0 + 99, POLICY) == frozenset()
    assert await state_of(store, nid) == GroupDelivery(DeliveryState.LEASED, 1)
    assert await store.ack("orders", nid, lease.token, T0 + 99) is ActionStatus.OK


async def test_extended_lease_expires_at_its_new_time(store: Store) -> None:
    nid = await add(store, 1)
    lease = await claim_one(store)
    await store.extend("orders", nid, lease.token, T0 + 100)
    assert await store.expire_leases(T0 + 100, POLICY) == frozenset({"orders"})
    assert await state_of(store, nid) == GroupDelivery(DeliveryState.PENDING, 1)


# release, expire_leases


async def test_release_requeues_only_that_members_leases_of_that_group(store: Store) -> None:
    ids = [await add(store, n) for n in range(3)]
    await store.claim("orders", "m1", 2, LEASE, ALL, T0)
    await claim_one(store, "orders", member="m2")
    await claim_one(store, "ledger", member="m1")
    assert await store.release("orders", "m1", T0 + 5, POLICY) == 2
    assert [(await state_of(store, nid)).state for nid in ids] == [
        DeliveryState.PENDING,
        DeliveryState.PENDING,
        DeliveryState.LEASED,
    ]
    assert await state_of(store, ids[0], "ledger") == GroupDelivery(DeliveryState.LEASED, 1)
    assert await store.next_due("orders", ALL) == T0 + 5 + POLICY.backoff(1)
    assert await store.release("orders", "m1", T0 + 6, POLICY) == 0


async def test_release_out_of_attempts_dead_letters(store: Store) -> None:
    nid = await add(store, 1)
    policy = RetryPolicy(min_backoff=2.0, max_backoff=10.0, max_attempts=1)
    await claim_one(store)
    assert await store.release("orders", "m1", T0 + 5, policy) == 1
    assert await state_of(store, nid) == GroupDelivery(DeliveryState.DEAD, 1)


async def test_expire_leases_requeues_expired_ones_after_the_backoff(store: Store) -> None:
    early, late = await add(store, 1), await add(store, 2)
    await claim_one(store, "orders", T0)
    await claim_one(store, "ledger", T0)
    await claim_one(store, "orders", T0 + 10)
    assert await store.expire_leases(T0 + LEASE - 0.001, POLICY) == frozenset()
    assert await store.expire_leases(T0 + LEASE, POLICY) == frozenset({"orders", "ledger"})
    assert await state_of(store, early) == GroupDelivery(DeliveryState.PENDING, 1)
    assert await state_of(store, late) == GroupDelivery(DeliveryState.LEASED, 1)
    assert await store.next_due("orders", ALL) == T0 + LEASE + POLICY.backoff(1)
    assert await store.expire_leases(T0 + LEASE, POLICY) == frozenset()


async def test_expire_leases_out_of_attempts_dead_letters_without_reporting(store: Store) -> None:
    nid = await add(store, 1)
    policy = RetryPolicy(min_backoff=2.0, max_backoff=10.0, max_attempts=1)
    await claim_one(store)
    assert await store.expire_leases(T0 + LEASE, policy) == frozenset()
    assert await state_of(store, nid) == GroupDelivery(DeliveryState.DEAD, 1)


# next_due


async def test_next_due_is_the_earliest_pending_delivery(store: Store) -> None:
    assert await store.next_due("orders", ALL) is None
    await add(store, 1, T0 + 50)
    await add(store, 2, T0 + 20)
    await store.append(note(3, REFUND), receipt(T0 + 30), GROUPS)
    assert await store.next_due("orders", ALL) == T0 + 20
    assert await store.next_due("orders", frozenset({REFUND})) == T0 + 30
    assert await store.next_due("refunds", frozenset({PAYMENT})) is None
    assert await store.next_due("nobody", ALL) is None


async def test_next_due_ignores_leased_and_settled_deliveries(store: Store) -> None:
    nid = await add(store, 1)
    await add(store, 2, T0 + 5)
    lease = await claim_one(store, now=T0)
    assert await store.next_due("orders", ALL) == T0 + 5
    await store.ack("orders", nid, lease.token, T0)
    await claim_one(store, now=T0 + 5)
    assert await store.next_due("orders", ALL) is None


# purge_settled


async def ack_all(store: Store, group: str, now: float) -> None:
    for lease in await store.claim(group, "m1", 100, LEASE, ALL, now):
        assert await store.ack(group, lease.notification_id, lease.token, now) is ActionStatus.OK


async def test_purge_removes_only_old_fully_acked_notifications(store: Store) -> None:
    acked = await add(store, 1, T0, (ORDERS,))
    partly = await add(store, 2, T0, (ORDERS, LEDGER))
    recent = await add(store, 3, T0 + 100, (ORDERS,))
    dead = await add(store, 4, T0, (ORDERS,))
    for lease in await store.claim("orders", "m1", 10, LEASE, ALL, T0 + 200):
        if lease.notification_id == dead:
            await store.reject("orders", dead, lease.token, "bad", T0 + 200)
        else:
            await store.ack("orders", lease.notification_id, lease.token, T0 + 200)
    assert await store.purge_settled(T0 + 100, 10) == 1
    assert dict(await store.group_states(acked)) == {}
    assert await store.ack("orders", acked, "t", T0) is ActionStatus.UNKNOWN
    for kept in (partly, recent, dead):
        assert await store.group_states(kept)
    assert await store.purge_settled(T0 + 100, 10) == 0


async def test_purge_keeps_dead_letters(store: Store) -> None:
    nid = await add(store, 1, T0, (ORDERS,))
    lease = await claim_one(store)
    await store.reject("orders", nid, lease.token, "bad", T0)
    assert await store.purge_settled(T0 + 1000, 10) == 0
    assert await state_of(store, nid) == GroupDelivery(DeliveryState.DEAD, 1)


async def test_purge_goes_by_the_last_receipt(store: Store) -> None:
    nid = await add(store, 1, T0, (ORDERS,))
    await ack_all(store, "orders", T0)
    await store.append(note(1), receipt(T0 + 500), (ORDERS,))
    assert await store.purge_settled(T0 + 500, 10) == 0
    assert await store.purge_settled(T0 + 501, 10) == 1
    again = await store.append(note(1), receipt(T0 + 600), (ORDERS,))
    assert again.created
    assert again.notification_id != nid


async def test_purge_respects_batch_size(store: Store) -> None:
    for n in range(5):
        await add(store, n, T0, (ORDERS,))
    await ack_all(store, "orders", T0)
    assert [await store.purge_settled(T0 + 1, 2) for _ in range(4)] == [2, 2, 1, 0]


# listen


async def test_listen_accepts_a_callback(store: Store) -> None:
    await store.listen(lambda event: None)
    assert (await store.append(note(1), receipt(), GROUPS)).created


# SQLite only


async def test_sqlite_durability_pragmas(sqlite_store: SQLiteStore) -> None:
    pragmas = await sqlite_store.pragmas()
    assert pragmas["journal_mode"] == "wal"
    assert pragmas["synchronous"] == 2  # FULL
    assert pragmas["busy_timeout"] == BUSY_TIMEOUT_MS
    assert pragmas["foreign_keys"] == 1
    assert pragmas["user_version"] == SCHEMA_VERSION


async def test_sqlite_creates_the_folder_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "store.db"
    first = SQLiteStore(path)
    await first.open()
    nid = await add(first, 1)
    await first.close()
    await first.close()
    second = SQLiteStore(path)
    await second.open()
    try:
        assert (await second.pragmas())["user_version"] == SCHEMA_VERSION
        assert await state_of(second, nid) == PENDING0
    finally:
        await second.close()


async def test_sqlite_two_stores_on_one_file_share_work_safely(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    one, two = SQLiteStore(path), SQLiteStore(path)
    await asyncio.gather(one.open(), two.open())  # both race to create the schema
    try:
        ids = {await add(one, n) for n in range(20)}
        claims = [
            s.claim("orders", f"m{i}", 3, LEASE, ALL, T0) for i in range(4) for s in (one, two)
        ]
        got = [x.notification_id for leases in await asyncio.gather(*claims) for x in leases]
        assert len(got) == len(set(got)) == 20
        assert set(got) == ids
    finally:
        await asyncio.gather(one.close(), two.close())


async def test_sqlite_errors_are_store_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="open"):
        await SQLiteStore(tmp_path).open()  # a folder, not a file
    closed = SQLiteStore(tmp_path / "x.db")
    with pytest.raises(StoreError, match="append"):
        await add(closed, 1)


KILLED_WRITER = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from paynotify_hub.domain import GroupSpec, NewNotification, ReceiptRecord
    from paynotify_hub.store.sqlite import BUSY_TIMEOUT_MS, SQLiteStore

    async def main() -> None:
        store = SQLiteStore(sys.argv[1])
        await store.open()
        note = NewNotification("id-1", "PAYMENT_RESULT", "req-1", "pay-1", "S", b"payload")
        result = await store.append(note, ReceiptRecord(100.0), [GroupSpec("orders")])
        [lease] = await store.claim("orders", "m1", 1, 30.0, frozenset(), 100.0)
        await store.ack("orders", result.notification_id, lease.token, 101.0)
        print(result.notification_id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # no close, no checkpoint

    asyncio.run(main())
    """
)


async def test_sqlite_ack_survives_kill_9(sqlite_store: SQLiteStore) -> None:
    path = sqlite_store.path.with_name("killed.db")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLED_WRITER, str(path), stdout=subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert path.with_name("killed.db-wal").stat().st_size > 0  # the commits live only in the WAL
    reopened = SQLiteStore(path)
    await reopened.open()
    try:
        nid = int(out)
        assert await state_of(reopened, nid) == GroupDelivery(DeliveryState.ACKED, 1)
        same = NewNotification("id-1", PAYMENT, "req-1", "pay-1", "S", b"payload")
        again = await reopened.append(same, receipt(), [ORDERS])
        assert (again.created, again.send_count) == (False, 2)
    finally:
        await reopened.close()
