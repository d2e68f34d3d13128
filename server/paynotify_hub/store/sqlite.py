"""Embedded SQLite backend of the store: one file, one hub.

The sqlite3 module blocks, so the one connection lives on one dedicated worker thread and every
verb is queued for that thread (`SQLiteStore._queue`) and its outcome awaited.

Group commit: the worker takes one queued verb and, without waiting, whatever else is queued (at
most `MAX_BATCH_OPS`), and runs them all in one transaction (BEGIN IMMEDIATE ... COMMIT), so a
burst of verbs costs one fsync instead of one each. A failing verb rolls back only itself and its
caller alone gets the error: the batch is then run again with a SAVEPOINT per verb (see
`_Worker._run_batch`). No caller gets an answer before the COMMIT that holds its change; if that
COMMIT fails, every caller of the batch gets the error.

Order: verbs run in the order they are called, and `claim` and `append` queue their job when called
(not when first awaited). So a claim called from an append's `on_queued` (called only when the
worker is idle: see `Store.append`) runs after that append, almost always in its transaction: the
worker can take the append alone only if the event loop's thread lost the GIL between the two.

Durability: WAL journal with synchronous=FULL, so an answered verb survives kill -9 and power loss.
Every sqlite3 error is wrapped into `StoreError` (`StoreUnavailable` while the file stays locked),
naming the operation and never payload contents.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import queue
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from paynotify_hub.domain import (
    ActionStatus,
    AppendResult,
    DeadLetter,
    DeliveryState,
    GroupDelivery,
    GroupSpec,
    GroupStats,
    HistoryKind,
    Lease,
    NewNotification,
    NotificationRecord,
    ReceiptRecord,
    RetryPolicy,
)
from paynotify_hub.store import sqlite_admin
from paynotify_hub.store.base import StoreError, StoreEvent, StoreUnavailable

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
Row = tuple[Any, ...]

BUSY_TIMEOUT_MS = 5000
# Bounds one group commit, so one transaction never holds the write lock for long.
MAX_BATCH_OPS = 256
WAL_SWITCH_RETRY_SECONDS = 0.01
# Locked or busy past the timeout: another process holds the file, retrying later may work.
_RETRYABLE_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})

# Each migration is a list of statements run in one transaction that also bumps PRAGMA user_version.
# Append new migrations; never edit one that has shipped.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE notifications (
            id                 INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused after a purge
            identity           TEXT    NOT NULL UNIQUE,
            notify_type        TEXT    NOT NULL,
            payment_request_id TEXT    NOT NULL,
            payment_id         TEXT    NOT NULL,
            result_status      TEXT    NOT NULL,
            payload            BLOB    NOT NULL,
            first_received_at  REAL    NOT NULL,
            last_received_at   REAL    NOT NULL,
            send_count         INTEGER NOT NULL
        )
        """,
        "CREATE INDEX notifications_payment_id ON notifications (payment_id)",
        "CREATE INDEX notifications_payment_request_id ON notifications (payment_request_id)",
        "CREATE INDEX notifications_last_received_at ON notifications (last_received_at)",
        """
        CREATE TABLE receipts (
            notification_id INTEGER NOT NULL REFERENCES notifications (id),
            received_at     REAL    NOT NULL,
            client_id       TEXT    NOT NULL,
            request_time    TEXT    NOT NULL,
            request_id      TEXT    NOT NULL
        )
        """,
        "CREATE INDEX receipts_notification_id ON receipts (notification_id)",
        """
        CREATE TABLE deliveries (
            notification_id  INTEGER NOT NULL REFERENCES notifications (id),
            group_name       TEXT    NOT NULL,
            notify_type      TEXT    NOT NULL,
            state            TEXT    NOT NULL
                             CHECK (state IN ('pending', 'leased', 'acked', 'dead')),
            attempts         INTEGER NOT NULL,
            available_at     REAL    NOT NULL,
            lease_token      TEXT,
            lease_member     TEXT,  -- kept after the lease ends: who held it last
            lease_expires_at REAL,
            acked_at         REAL,
            dead_reason      TEXT,
            updated_at       REAL    NOT NULL,
            PRIMARY KEY (group_name, notification_id)
        )
        """,
        "CREATE INDEX deliveries_notification_id ON deliveries (notification_id)",
        # Partial indexes stay as small as the live work, however many acked rows pile up:
        # claim walks pending rows in id order, next_due seeks the earliest available_at.
        """
        CREATE INDEX deliveries_claim ON deliveries (group_name, notification_id, available_at)
        WHERE state = 'pending'
        """,
        """
        CREATE INDEX deliveries_due ON deliveries (group_name, available_at)
        WHERE state = 'pending'
        """,
        "CREATE INDEX deliveries_leased ON deliveries (lease_expires_at) WHERE state = 'leased'",
        """
        CREATE INDEX deliveries_leased_member ON deliveries (group_name, lease_member)
        WHERE state = 'leased'
        """,
    ),
    (
        # One row per lease and per end of a lease (and per replay), written in the transaction
        # of the change. No foreign key: purge deletes these rows with their notification.
        """
        CREATE TABLE delivery_history (
            notification_id  INTEGER NOT NULL,
            group_name       TEXT    NOT NULL,
            kind             TEXT    NOT NULL,
            at               REAL    NOT NULL,
            attempt          INTEGER NOT NULL,
            member           TEXT    NOT NULL,
            state            TEXT    NOT NULL,  -- the delivery's state right after the event
            lease_expires_at REAL,
            due_at           REAL,
            detail           TEXT    NOT NULL
        )
        """,
        "CREATE INDEX delivery_history_notification_id ON delivery_history (notification_id)",
        # Dead letters are few: status counts and the operator lists them without a scan.
        """
        CREATE INDEX deliveries_dead ON deliveries (group_name, notification_id)
        WHERE state = 'dead'
        """,
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)

_SELECT_NOTIFICATION = """
    SELECT id, send_count, first_received_at FROM notifications WHERE identity = ?
"""
_INSERT_NOTIFICATION = """
    INSERT INTO notifications (identity, notify_type, payment_request_id, payment_id, result_status,
                               payload, first_received_at, last_received_at, send_count)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)
"""
_COUNT_RESEND = """
    UPDATE notifications
    SET send_count = send_count + 1, last_received_at = max(last_received_at, ?)
    WHERE id = ?
"""
_INSERT_RECEIPT = """
    INSERT INTO receipts (notification_id, received_at, client_id, request_time, request_id)
    VALUES (?, ?, ?, ?, ?)
"""
_INSERT_DELIVERY = """
    INSERT INTO deliveries (notification_id, group_name, notify_type, state, attempts, available_at,
                            updated_at)
    VALUES (?, ?, ?, 'pending', 0, ?, ?)
    ON CONFLICT (group_name, notification_id) DO NOTHING
"""
_GROUP_STATES = """
    SELECT group_name, state, attempts FROM deliveries WHERE notification_id = ? ORDER BY group_name
"""
# :types is a JSON array of notifyType texts; '[]' means every type. The unary + keeps the planner
# off deliveries_due: walking deliveries_claim in id order stops at LIMIT instead of sorting every
# due row of a backlog.
_SELECT_CLAIMABLE = """
    SELECT d.notification_id, d.attempts, n.payload, n.notify_type, n.send_count,
           n.first_received_at
    FROM deliveries AS d JOIN notifications AS n ON n.id = d.notification_id
    WHERE d.group_name = :group AND d.state = 'pending' AND +d.available_at <= :now
      AND (:types = '[]' OR d.notify_type IN (SELECT value FROM json_each(:types)))
    ORDER BY d.notification_id
    LIMIT :limit
"""
_LEASE = """
    UPDATE deliveries
    SET state = 'leased', attempts = attempts + 1, lease_token = ?, lease_member = ?,
        lease_expires_at = ?, updated_at = ?
    WHERE group_name = ? AND notification_id = ?
"""
_SELECT_DELIVERY = """
    SELECT state, lease_token, attempts, lease_member FROM deliveries
    WHERE group_name = ? AND notification_id = ?
"""
# Acks only the live lease the token names: one statement, where a check and an update were two.
_ACK = """
    UPDATE deliveries
    SET state = 'acked', acked_at = :now, updated_at = :now, lease_token = NULL,
        lease_expires_at = NULL
    WHERE group_name = :group AND notification_id = :id
      AND state = 'leased' AND lease_token = :token
    RETURNING attempts, lease_member
"""
_BURY = """
    UPDATE deliveries
    SET state = 'dead', dead_reason = ?, updated_at = ?, lease_token = NULL, lease_expires_at = NULL
    WHERE group_name = ? AND notification_id = ?
"""
_REQUEUE = """
    UPDATE deliveries
    SET state = 'pending', available_at = ?, updated_at = ?, lease_token = NULL,
        lease_expires_at = NULL
    WHERE group_name = ? AND notification_id = ?
"""
_EXTEND = """
    UPDATE deliveries SET lease_expires_at = ? WHERE group_name = ? AND notification_id = ?
"""
_SELECT_MEMBER_LEASES = """
    SELECT group_name, notification_id, attempts, lease_member FROM deliveries
    WHERE group_name = ? AND state = 'leased' AND lease_member = ?
"""
_SELECT_EXPIRED_LEASES = """
    SELECT group_name, notification_id, attempts, lease_member FROM deliveries
    WHERE state = 'leased' AND lease_expires_at <= ?
"""
_NEXT_DUE = """
    SELECT min(available_at) FROM deliveries
    WHERE group_name = :group AND state = 'pending'
      AND (:types = '[]' OR notify_type IN (SELECT value FROM json_each(:types)))
"""
# Dead letters are kept for the operator: only notifications every group acked are purged.
_SELECT_PURGEABLE = """
    SELECT n.id FROM notifications AS n
    WHERE n.last_received_at < ?
      AND NOT EXISTS (SELECT 1 FROM deliveries AS d
                      WHERE d.notification_id = n.id AND d.state <> 'acked')
    ORDER BY n.last_received_at
    LIMIT ?
"""
_INSERT_HISTORY = """
    INSERT INTO delivery_history (notification_id, group_name, kind, at, attempt, member, state,
                                  lease_expires_at, due_at, detail)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_DELETE_RECEIPTS = "DELETE FROM receipts WHERE notification_id = ?"
_DELETE_HISTORY = "DELETE FROM delivery_history WHERE notification_id = ?"
_DELETE_DELIVERIES = "DELETE FROM deliveries WHERE notification_id = ?"
_DELETE_NOTIFICATION = "DELETE FROM notifications WHERE id = ?"
_REPORTED_PRAGMAS = ("journal_mode", "synchronous", "busy_timeout", "foreign_keys", "user_version")


def _new_token() -> str:
    return secrets.token_hex(8)


class SQLiteStore:
    """The `Store` on one SQLite file, for a single hub.

    `token_factory` makes lease tokens; tests may inject a predictable one.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, token_factory: Callable[[], str] = _new_token
    ) -> None:
        self.path = Path(path)
        self._new_token = token_factory
        self._worker: _Worker | None = None

    @property
    def commits(self) -> int:
        """Transactions committed since open: with group commit, fewer than the verbs run."""
        return 0 if self._worker is None else self._worker.commits

    async def open(self) -> None:
        """Create the folder and file if missing, set durability pragmas, migrate the schema."""
        if self._worker is not None:
            return
        conn = await asyncio.to_thread(_connect, self.path)
        self._worker = _Worker(conn)

    async def close(self) -> None:
        """Close the connection after work already queued; safe to call twice."""
        worker, self._worker = self._worker, None
        if worker is not None:
            await worker.stop()

    async def append(
        self,
        notification: NewNotification,
        receipt: ReceiptRecord,
        groups: Sequence[GroupSpec],
        *,
        on_queued: Callable[[], None] | None = None,
    ) -> AppendResult:
        # Kicked claims pay off when the append would otherwise commit alone. A busy worker
        # batches them anyway, and claims made once woken then cover several appends each.
        idle = self._worker is not None and self._worker.idle()
        appended = self._queue("append", lambda c: _append(c, notification, receipt, groups))
        if on_queued is not None and idle:
            on_queued()
        return await appended

    async def group_states(self, notification_id: int) -> Mapping[str, GroupDelivery]:
        return await self._run(
            "group_states", lambda c: _group_states(c, notification_id), write=False
        )

    def claim(
        self,
        group: str,
        member: str,
        limit: int,
        lease_seconds: float,
        notify_types: frozenset[str],
        now: float,
    ) -> asyncio.Future[list[Lease]]:
        """Queued now, not when awaited: a claim called right after an append runs after it."""
        if limit <= 0:  # SQLite reads a negative LIMIT as "no limit"
            done: asyncio.Future[list[Lease]] = asyncio.get_running_loop().create_future()
            done.set_result([])
            return done
        query = {"group": group, "now": now, "types": _types_json(notify_types), "limit": limit}
        expires = now + lease_seconds
        return self._queue(
            "claim", lambda c: _claim(c, query, member, expires, now, self._new_token)
        )

    async def ack(self, group: str, notification_id: int, token: str, now: float) -> ActionStatus:
        [status] = await self.ack_many(group, [(notification_id, token)], now)
        return status

    async def ack_many(
        self, group: str, acks: Sequence[tuple[int, str]], now: float
    ) -> list[ActionStatus]:
        if not acks:
            return []
        return await self._run("ack", lambda c: _ack_many(c, group, acks, now))

    async def nack(
        self,
        group: str,
        notification_id: int,
        token: str,
        now: float,
        delay: float | None,
        policy: RetryPolicy,
    ) -> ActionStatus:
        def body(conn: sqlite3.Connection, attempts: int, member: str) -> Row | None:
            ended = (group, notification_id, attempts, member)
            return _requeue_or_bury(conn, ended, HistoryKind.NACKED, now, policy, delay)

        return await self._act("nack", group, notification_id, token, body)

    async def reject(
        self, group: str, notification_id: int, token: str, reason: str, now: float
    ) -> ActionStatus:
        def body(conn: sqlite3.Connection, attempts: int, member: str) -> Row | None:
            conn.execute(_BURY, (reason, now, group, notification_id))
            kind = HistoryKind.REJECTED
            return _event(notification_id, group, kind, now, attempts, member, detail=reason)

        return await self._act("reject", group, notification_id, token, body)

    async def extend(
        self, group: str, notification_id: int, token: str, lease_expires_at: float
    ) -> ActionStatus:
        def body(conn: sqlite3.Connection, _attempts: int, _member: str) -> Row | None:
            conn.execute(_EXTEND, (lease_expires_at, group, notification_id))
            return None  # extensions are not history: the lease's expiry says the last one

        return await self._act("extend", group, notification_id, token, body)

    async def release(self, group: str, member: str, now: float, policy: RetryPolicy) -> int:
        def body(conn: sqlite3.Connection) -> int:
            rows = conn.execute(_SELECT_MEMBER_LEASES, (group, member)).fetchall()
            _requeue_all(conn, rows, HistoryKind.RELEASED, now, policy)
            return len(rows)

        return await self._run("release", body)

    async def expire_leases(self, now: float, policy: RetryPolicy) -> frozenset[str]:
        def body(conn: sqlite3.Connection) -> frozenset[str]:
            rows = conn.execute(_SELECT_EXPIRED_LEASES, (now,)).fetchall()
            return frozenset(_requeue_all(conn, rows, HistoryKind.EXPIRED, now, policy))

        return await self._run("expire_leases", body)

    async def next_due(self, group: str, notify_types: frozenset[str]) -> float | None:
        query = {"group": group, "types": _types_json(notify_types)}

        def body(conn: sqlite3.Connection) -> float | None:
            (due,) = conn.execute(_NEXT_DUE, query).fetchone()
            return None if due is None else float(due)

        return await self._run("next_due", body, write=False)

    async def purge_settled(self, before: float, batch_size: int) -> int:
        """Purge notifications every group acked; dead letters stay until an operator acts."""
        if batch_size <= 0:
            return 0
        return await self._run("purge_settled", lambda c: _purge(c, before, batch_size))

    async def listen(self, on_event: Callable[[StoreEvent], None]) -> None:
        """Nothing to do: a SQLite file has one hub, so no other hub makes changes."""

    # -- the operator's verbs (sqlite_admin.py) ---------------------------------------------------

    async def group_stats(
        self, now: float, groups: Sequence[str], *, count_acked: bool = True
    ) -> list[GroupStats]:
        return await self._run(
            "group_stats",
            lambda c: sqlite_admin.group_stats(c, now, groups, count_acked),
            write=False,
        )

    async def find_notifications(self, key: str, limit: int) -> list[NotificationRecord]:
        if not key or limit <= 0:
            return []
        return await self._run(
            "find_notifications",
            lambda c: sqlite_admin.find_notifications(c, key, limit),
            write=False,
        )

    async def dead_letters(
        self, group: str | None, after_id: int, limit: int, *, after_group: str = ""
    ) -> list[DeadLetter]:
        if limit <= 0:
            return []
        return await self._run(
            "dead_letters",
            lambda c: sqlite_admin.dead_letters(c, group, after_id, after_group, limit),
            write=False,
        )

    async def replay(self, group: str, notification_id: int, now: float) -> ActionStatus:
        return await self._run(
            "replay", lambda c: sqlite_admin.replay(c, group, notification_id, now)
        )

    async def replay_since(self, group: str, since: float, now: float) -> int:
        return await self._run(
            "replay_since", lambda c: sqlite_admin.replay_since(c, group, since, now)
        )

    async def pragmas(self) -> dict[str, str | int]:
        """The connection's journal, durability and schema settings, for status and tests."""
        return await self._run("pragmas", _read_pragmas, write=False)

    async def _act(
        self,
        op: str,
        group: str,
        notification_id: int,
        token: str,
        act: Callable[[sqlite3.Connection, int, str], Row | None],
    ) -> ActionStatus:
        """Run `act` (given the attempts so far and the lease's member) only if `token` names the
        live lease; record the history event it returns."""

        def body(conn: sqlite3.Connection) -> ActionStatus:
            row = conn.execute(_SELECT_DELIVERY, (group, notification_id)).fetchone()
            if row is None:
                return ActionStatus.UNKNOWN
            state, lease_token, attempts, member = row
            if state != DeliveryState.LEASED or lease_token != token:
                return ActionStatus.STALE
            event = act(conn, int(attempts), member or "")
            if event is not None:
                conn.execute(_INSERT_HISTORY, event)
            return ActionStatus.OK

        return await self._run(op, body)

    async def _run(
        self, op: str, body: Callable[[sqlite3.Connection], T], *, write: bool = True
    ) -> T:
        return await self._queue(op, body, write=write)

    def _queue(
        self, op: str, body: Callable[[sqlite3.Connection], T], *, write: bool = True
    ) -> asyncio.Future[T]:
        """Queue `body` for the worker now; the future holds its outcome once committed."""
        if self._worker is None:
            closed: asyncio.Future[T] = asyncio.get_running_loop().create_future()
            closed.set_exception(StoreError(f"sqlite store: {op} failed: the store is not open"))
            return closed
        return cast("asyncio.Future[T]", self._worker.queue(op, body, write))


@dataclass(eq=False)
class _Job:
    """One verb waiting for the worker; `outcome` is its result or the exception to raise.

    A `final` job is not a verb: the worker runs it outside any transaction, after the jobs queued
    before it, and then stops.
    """

    op: str
    body: Callable[[sqlite3.Connection], Any]
    write: bool
    future: asyncio.Future[Any]
    final: bool = False
    outcome: Any = field(default=None)
    failed: bool = False


class _Worker:
    """The one thread that owns the connection and runs queued verbs in group commits."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._running = False  # a batch is under way
        self.commits = 0
        threading.Thread(target=self._serve, name="paynotify-sqlite", daemon=True).start()

    def queue(
        self, op: str, body: Callable[[sqlite3.Connection], Any], write: bool, final: bool = False
    ) -> asyncio.Future[Any]:
        """Queue a job behind every job queued before it; its future settles after its batch."""
        job = _Job(op, body, write, asyncio.get_running_loop().create_future(), final)
        self._jobs.put(job)
        return job.future

    def idle(self) -> bool:
        """Whether the worker waits for work: no batch under way, nothing queued."""
        return not self._running and self._jobs.empty()

    async def stop(self) -> None:
        """Let the verbs already queued finish, then close the connection."""
        await self.queue("close", _close, write=False, final=True)

    def _serve(self) -> None:
        while True:
            batch, final = self._take()
            if batch:
                self._run_batch(batch)
                _answer(batch)
            self._running = False
            if final is not None:
                _run_alone(self._conn, final)
                _answer([final])
                return

    def _take(self) -> tuple[list[_Job], _Job | None]:
        """Block for one job, then take what else is queued without waiting."""
        batch: list[_Job] = []
        job = self._jobs.get()
        self._running = True
        while not job.final:
            if not job.future.cancelled():  # a racy read, harmless: at worst it runs anyway
                batch.append(job)
            if len(batch) >= MAX_BATCH_OPS:
                return batch, None
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return batch, None
        return batch, job

    def _run_batch(self, batch: list[_Job]) -> None:
        """One transaction for the whole batch; answers are set only once COMMIT returned.

        The verbs first run without a savepoint each: two statements fewer per verb, and every
        statement costs this thread a trip through the GIL (sqlite3 lets it go for each step),
        which under load costs more than the statement. If a verb fails, the transaction is
        rolled back and the batch runs again with a savepoint per verb, so that the failure
        undoes only its own verb's changes. The verbs can run twice: their answers are set only
        after the commit, and a rolled-back run left nothing behind. A BEGIN or COMMIT that fails
        fails the whole batch, as it always did (no second wait for a busy lock).
        """
        conn = self._conn
        begin = "BEGIN IMMEDIATE" if any(j.write for j in batch) else "BEGIN"
        try:
            conn.execute(begin)
            if not _run_bare(conn, batch):
                conn.execute(begin)
                for job in batch:
                    _run_isolated(conn, job)
            conn.execute("COMMIT")
        except BaseException as exc:
            _rollback(conn)
            for job in batch:
                if not job.failed:
                    job.outcome, job.failed = _as_store_error(job.op, exc), True
            return
        self.commits += 1


# Everything below runs off the event loop (on the worker thread, or on a helper thread while
# opening), except `_settle`.


def _answer(jobs: list[_Job]) -> None:
    """Hand the outcomes to each caller's event loop; a closed loop has nobody left waiting."""
    for loop in {job.future.get_loop() for job in jobs}:
        try:
            loop.call_soon_threadsafe(_settle, [j for j in jobs if j.future.get_loop() is loop])
        except RuntimeError:
            logger.warning("sqlite store: event loop closed before its verbs were answered")


def _settle(jobs: list[_Job]) -> None:
    for job in jobs:
        if job.future.done():  # the caller was cancelled
            continue
        if job.failed:
            job.future.set_exception(job.outcome)
        else:
            job.future.set_result(job.outcome)


def _run_alone(conn: sqlite3.Connection, job: _Job) -> None:
    try:
        job.outcome = job.body(conn)
    except BaseException as exc:
        job.outcome, job.failed = exc, True


def _run_bare(conn: sqlite3.Connection, jobs: list[_Job]) -> bool:
    """Run the verbs one after the other in the open transaction; if one raises, roll the
    transaction back (every verb's changes) and return False."""
    try:
        for job in jobs:
            job.outcome = job.body(conn)
    except Exception:
        _rollback(conn)
        return False
    return True


def _run_isolated(conn: sqlite3.Connection, job: _Job) -> None:
    """Run one verb of a batch in a savepoint, so its failure undoes only its own changes.

    If SQLite itself ended the whole transaction (disk full, I/O error), the error is raised so
    the whole batch fails: the changes of the verbs before it are gone too.
    """
    conn.execute("SAVEPOINT verb")
    try:
        job.outcome = job.body(conn)
    except Exception as exc:
        job.outcome, job.failed = _as_store_error(job.op, exc), True
        if not conn.in_transaction:
            raise
        conn.execute("ROLLBACK TO verb")
    conn.execute("RELEASE verb")


def _as_store_error(op: str, exc: BaseException) -> BaseException:
    if not isinstance(exc, sqlite3.Error):
        return exc
    error = _wrap(op, exc)
    error.__cause__ = exc
    return error


# Everything below runs on the worker thread.


def _transaction(
    conn: sqlite3.Connection, op: str, body: Callable[[sqlite3.Connection], T], write: bool
) -> T:
    """One transaction; IMMEDIATE takes the write lock first, so a writer never fails to upgrade."""
    try:
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        result = body(conn)
        conn.execute("COMMIT")
        return result
    except BaseException as exc:
        _rollback(conn)
        if isinstance(exc, sqlite3.Error):
            raise _wrap(op, exc) from exc
        raise


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        logger.warning("sqlite store: rollback failed", exc_info=True)


def _is_busy(exc: sqlite3.Error) -> bool:
    code = int(getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF  # primary code of an extended one
    return code in _RETRYABLE_CODES


def _wrap(op: str, exc: sqlite3.Error) -> StoreError:
    kind = StoreUnavailable if _is_busy(exc) else StoreError
    return kind(f"sqlite store: {op} failed: {type(exc).__name__}: {exc}")


def _connect(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"sqlite store: open failed: {type(exc).__name__}: {exc}") from exc
    try:
        _configure(conn)
        _migrate(conn)
    except BaseException:
        conn.close()
        raise
    logger.info("sqlite store opened", extra={"path": str(path)})
    return conn


def _configure(conn: sqlite3.Connection) -> None:
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = _enable_wal(conn)
        # FULL syncs the WAL on every commit: the only level that survives a power cut in WAL mode.
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error as exc:
        raise _wrap("open", exc) from exc
    if str(mode).lower() != "wal":
        raise StoreError(f"sqlite store: open failed: journal_mode is {mode!r}, WAL is required")


def _enable_wal(conn: sqlite3.Connection) -> str:
    """Switching journal mode skips the busy handler, so a hub opening beside another retries."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            return str(mode)
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(WAL_SWITCH_RETRY_SECONDS)


def _migrate(conn: sqlite3.Connection) -> None:
    for version, statements in enumerate(_MIGRATIONS, start=1):
        migrate = functools.partial(_apply_migration, version=version, statements=statements)
        _transaction(conn, "migrate", migrate, True)


def _apply_migration(conn: sqlite3.Connection, version: int, statements: Sequence[str]) -> None:
    """Re-read the version under the write lock: another process may have just migrated."""
    (current,) = conn.execute("PRAGMA user_version").fetchone()
    if current > len(_MIGRATIONS):
        raise StoreError(
            f"sqlite store: open failed: schema version {current} is newer than this program's "
            f"{len(_MIGRATIONS)}"
        )
    if current >= version:
        return
    for statement in statements:
        conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {int(version)}")
    logger.info("sqlite store schema migrated", extra={"schema_version": version})


def _close(conn: sqlite3.Connection) -> None:
    try:
        conn.close()
    except sqlite3.Error as exc:
        raise _wrap("close", exc) from exc


def _types_json(notify_types: frozenset[str]) -> str:
    return json.dumps(sorted(notify_types))


def _append(
    conn: sqlite3.Connection,
    notification: NewNotification,
    receipt: ReceiptRecord,
    groups: Sequence[GroupSpec],
) -> AppendResult:
    at = receipt.received_at
    row = conn.execute(_SELECT_NOTIFICATION, (notification.identity,)).fetchone()
    if row is None:
        nid, send_count, first = _insert_notification(conn, notification, at), 1, at
    else:
        nid, send_count, first = int(row[0]), int(row[1]) + 1, float(row[2])
        conn.execute(_COUNT_RESEND, (at, nid))
    receipt_row = (nid, at, receipt.client_id, receipt.request_time, receipt.request_id)
    conn.execute(_INSERT_RECEIPT, receipt_row)
    # A known identity only gains rows for groups declared since; existing ones are untouched.
    wanted = [g.name for g in groups if g.wants(notification.notify_type)]
    conn.executemany(
        _INSERT_DELIVERY, [(nid, name, notification.notify_type, at, at) for name in wanted]
    )
    return AppendResult(nid, row is None, send_count, first, _group_states(conn, nid))


def _insert_notification(conn: sqlite3.Connection, n: NewNotification, at: float) -> int:
    values = (n.identity, n.notify_type, n.payment_request_id, n.payment_id, n.result_status)
    cursor = conn.execute(_INSERT_NOTIFICATION, (*values, n.payload, at, at))
    if cursor.lastrowid is None:
        raise sqlite3.InterfaceError("no row id after inserting a notification")
    return cursor.lastrowid


def _ack_many(
    conn: sqlite3.Connection, group: str, acks: Sequence[tuple[int, str]], now: float
) -> list[ActionStatus]:
    statuses: list[ActionStatus] = []
    events: list[Row] = []
    for notification_id, token in acks:
        params = {"now": now, "group": group, "id": notification_id, "token": token}
        row = conn.execute(_ACK, params).fetchone()
        if row is None:  # not this lease: tell a stale token from a delivery never issued
            known = conn.execute(_SELECT_DELIVERY, (group, notification_id)).fetchone()
            statuses.append(ActionStatus.UNKNOWN if known is None else ActionStatus.STALE)
            continue
        attempts, member = row
        statuses.append(ActionStatus.OK)
        events.append(
            _event(notification_id, group, HistoryKind.ACKED, now, int(attempts), member or "")
        )
    if events:
        conn.executemany(_INSERT_HISTORY, events)
    return statuses


def _group_states(conn: sqlite3.Connection, notification_id: int) -> dict[str, GroupDelivery]:
    rows = conn.execute(_GROUP_STATES, (notification_id,)).fetchall()
    return {str(g): GroupDelivery(DeliveryState(state), int(n)) for g, state, n in rows}


def _claim(
    conn: sqlite3.Connection,
    query: Mapping[str, object],
    member: str,
    expires: float,
    now: float,
    new_token: Callable[[], str],
) -> list[Lease]:
    group = str(query["group"])
    rows = conn.execute(_SELECT_CLAIMABLE, query).fetchall()
    leases = [_lease_of(group, row, new_token(), expires) for row in rows]
    conn.executemany(
        _LEASE, [(x.token, member, expires, now, group, x.notification_id) for x in leases]
    )
    leased = HistoryKind.LEASED
    conn.executemany(
        _INSERT_HISTORY,
        [_event(x.notification_id, group, leased, now, x.attempt, member, expires) for x in leases],
    )
    return leases


def _lease_of(group: str, row: Row, token: str, expires: float) -> Lease:
    nid, attempts, payload, notify_type, send_count, first_received_at = row
    return Lease(
        notification_id=int(nid),
        group=group,
        token=token,
        attempt=int(attempts) + 1,
        lease_expires_at=expires,
        payload=bytes(payload),
        notify_type=str(notify_type),
        send_count=int(send_count),
        first_received_at=float(first_received_at),
    )


def _requeue_all(
    conn: sqlite3.Connection,
    rows: Sequence[Row],
    kind: HistoryKind,
    now: float,
    policy: RetryPolicy,
) -> list[str]:
    """Requeue (or bury) leased (group, id, attempts, member) rows whose lease ended by `kind`;
    returns the groups of requeued ones."""
    events = [_requeue_or_bury(conn, row, kind, now, policy, None) for row in rows]
    conn.executemany(_INSERT_HISTORY, events)
    return [str(e[1]) for e in events if e[6] == DeliveryState.PENDING]


def _requeue_or_bury(
    conn: sqlite3.Connection,
    ended: Row,
    kind: HistoryKind,
    now: float,
    policy: RetryPolicy,
    delay: float | None,
) -> Row:
    """Pending again after the backoff, or dead when out of attempts; returns the history event."""
    group, notification_id, attempts, member = ended
    attempts = int(attempts)
    if attempts >= policy.max_attempts:
        reason = f"max attempts reached ({attempts})"
        conn.execute(_BURY, (reason, now, group, notification_id))
        return _event(notification_id, group, kind, now, attempts, member, detail=reason)
    due = now + (policy.backoff(attempts) if delay is None else delay)
    conn.execute(_REQUEUE, (due, now, group, notification_id))
    state = DeliveryState.PENDING
    return _event(notification_id, group, kind, now, attempts, member, state=state, due=due)


_STATE_AFTER = {
    HistoryKind.LEASED: DeliveryState.LEASED,
    HistoryKind.ACKED: DeliveryState.ACKED,
    HistoryKind.REPLAYED: DeliveryState.PENDING,
}


def _event(
    notification_id: int,
    group: str,
    kind: HistoryKind,
    at: float,
    attempt: int,
    member: str | None,
    expires: float | None = None,
    *,
    state: DeliveryState | None = None,
    due: float | None = None,
    detail: str = "",
) -> Row:
    """A delivery_history row; the state after the event defaults to the one `kind` implies."""
    after = state or _STATE_AFTER.get(kind, DeliveryState.DEAD)
    return (
        notification_id, group, kind.value, at, attempt, member or "", after.value, expires, due,
        detail,
    )  # fmt: skip


def _purge(conn: sqlite3.Connection, before: float, batch_size: int) -> int:
    ids = [(nid,) for (nid,) in conn.execute(_SELECT_PURGEABLE, (before, batch_size)).fetchall()]
    for statement in (_DELETE_RECEIPTS, _DELETE_HISTORY, _DELETE_DELIVERIES, _DELETE_NOTIFICATION):
        conn.executemany(statement, ids)
    return len(ids)


def _read_pragmas(conn: sqlite3.Connection) -> dict[str, str | int]:
    return {name: conn.execute(f"PRAGMA {name}").fetchone()[0] for name in _REPORTED_PRAGMAS}
