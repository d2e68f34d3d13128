"""Group commit in the SQLite store: verbs queued together share one durable transaction.

No mocks: to queue a burst deterministically, a second connection holds the file's write lock
while the verbs are queued, so the worker waits on its BEGIN IMMEDIATE and everything queued
meanwhile lands in the next batch.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import pytest

from paynotify_hub.domain import ActionStatus, DeliveryState, GroupSpec, NewNotification
from paynotify_hub.store import StoreError
from paynotify_hub.store.sqlite import SQLiteStore
from tests.store.test_contract import ALL, LEASE, T0, note, receipt

ORDERS = GroupSpec("orders")
BURST = 200


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "store.db")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@contextmanager
def write_locked(path: Path) -> Iterator[None]:
    """Hold the file's write lock from another connection until the block ends."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


async def queued() -> None:
    """Let freshly created tasks run up to their first await: each has queued its verb."""
    for _ in range(3):
        await asyncio.sleep(0)


def count(path: Path, sql: str, *args: object) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(sql, args).fetchone()[0])


async def test_one_verb_at_a_time_is_one_commit_each(store: SQLiteStore) -> None:
    for n in range(3):
        await store.append(note(n), receipt(), (ORDERS,))
    assert store.commits == 3


async def test_a_concurrent_burst_lands_in_fewer_commits_and_is_durable(
    store: SQLiteStore,
) -> None:
    appended = await asyncio.gather(
        *(store.append(note(n), receipt(), (ORDERS,)) for n in range(BURST))
    )
    leases = await store.claim("orders", "m1", BURST, LEASE, ALL, T0)
    statuses = await asyncio.gather(
        *(store.ack("orders", x.notification_id, x.token, T0 + 1) for x in leases)
    )
    assert len({r.notification_id for r in appended}) == BURST
    assert len(leases) == BURST
    assert set(statuses) == {ActionStatus.OK}
    assert store.commits < 2 * BURST + 1

    await store.close()
    reopened = SQLiteStore(store.path)
    await reopened.open()
    try:
        states = await asyncio.gather(*(reopened.group_states(r.notification_id) for r in appended))
    finally:
        await reopened.close()
    assert {s["orders"].state for s in states} == {DeliveryState.ACKED}


async def test_a_failing_verb_rolls_back_only_itself(store: SQLiteStore) -> None:
    # A group without a name breaks a NOT NULL constraint after the notification and its receipt
    # were inserted: the savepoint must undo those two rows as well.
    nameless = GroupSpec(cast(str, None))
    bad: NewNotification = note(999)
    with write_locked(store.path):
        good = [asyncio.create_task(store.append(note(n), receipt(), (ORDERS,))) for n in range(20)]
        failing = asyncio.create_task(store.append(bad, receipt(), (nameless,)))
        good += [
            asyncio.create_task(store.append(note(n), receipt(), (ORDERS,))) for n in range(20, 40)
        ]
        await queued()
    with pytest.raises(StoreError, match="append failed: IntegrityError"):
        await failing
    results = await asyncio.gather(*good)

    # At most two transactions for 41 verbs (what the worker took before the lock, then the rest),
    # so the failing verb, queued in the middle, shared one with good verbs.
    assert store.commits <= 2
    assert all(r.created for r in results)
    assert count(store.path, "SELECT count(*) FROM notifications") == 40
    assert count(store.path, "SELECT count(*) FROM receipts") == 40
    assert (
        count(store.path, "SELECT count(*) FROM notifications WHERE identity = ?", bad.identity)
        == 0
    )


async def test_read_only_verbs_join_a_batch(store: SQLiteStore) -> None:
    first = await store.append(note(1), receipt(), (ORDERS,))
    with write_locked(store.path):
        reads = [asyncio.create_task(store.group_states(first.notification_id)) for _ in range(10)]
        write = asyncio.create_task(store.append(note(2), receipt(), (ORDERS,)))
        await queued()
    assert all(r == first.groups for r in await asyncio.gather(*reads))
    assert (await write).created
    assert store.commits <= 3  # the first append, then at most two batches for the eleven verbs


async def test_close_waits_for_the_verbs_already_queued(store: SQLiteStore) -> None:
    tasks = [asyncio.create_task(store.append(note(n), receipt(), (ORDERS,))) for n in range(50)]
    await queued()
    await store.close()
    assert len(await asyncio.gather(*tasks)) == 50
    assert count(store.path, "SELECT count(*) FROM notifications") == 50
    with pytest.raises(StoreError, match="not open"):
        await store.append(note(51), receipt(), (ORDERS,))


@contextmanager
def statements(store: SQLiteStore) -> Iterator[list[str]]:
    """Every statement the store's connection runs meanwhile (SQLite's own trace callback)."""
    seen: list[str] = []
    conn = store._worker._conn  # type: ignore[union-attr]
    conn.set_trace_callback(seen.append)
    try:
        yield seen
    finally:
        conn.set_trace_callback(None)


async def test_a_batch_that_succeeds_runs_without_a_savepoint_per_verb(store: SQLiteStore) -> None:
    """Each statement costs the worker a trip through the GIL: a batch runs its verbs bare, and
    only a batch in which one fails runs again with a savepoint each (the test above)."""
    with statements(store) as seen:
        with write_locked(store.path):
            tasks = [
                asyncio.create_task(store.append(note(n), receipt(), (ORDERS,))) for n in range(10)
            ]
            await queued()
        assert all(r.created for r in await asyncio.gather(*tasks))
    assert not [s for s in seen if s.startswith(("SAVEPOINT", "RELEASE"))], seen
    assert count(store.path, "SELECT count(*) FROM notifications") == 10

    nameless = GroupSpec(cast(str, None))
    with statements(store) as seen:
        with write_locked(store.path):
            good = asyncio.create_task(store.append(note(20), receipt(), (ORDERS,)))
            failing = asyncio.create_task(store.append(note(21), receipt(), (nameless,)))
            await queued()
        with pytest.raises(StoreError, match="append failed: IntegrityError"):
            await failing
        assert (await good).created
    # The bare run undone whole, then its batch again with a savepoint per verb (the good append
    # may have had a batch of its own, taken before the failing one was queued).
    assert seen.count("ROLLBACK") == 1, seen
    assert 1 <= seen.count("SAVEPOINT verb") <= 2, seen
    assert count(store.path, "SELECT count(*) FROM notifications") == 11
