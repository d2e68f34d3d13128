"""What the run left behind, read after every process stopped: the store and the members' logs.

    store = read_store(url)          # sqlite:///PATH (opened read-only) or postgresql://...
    logs = read_member_logs(folder)  # every *.jsonl a subscriber_proc wrote

The store's tables are those of `paynotify_hub.store.sqlite` / `postgres` (notifications,
deliveries, delivery_history, receipts); only columns both backends share are read.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

__all__ = ["LogEvent", "StoreSnapshot", "read_member_logs", "read_store"]

Key = tuple[int, str]  # (notification id, group)

_NOTIFICATIONS = "SELECT id, payment_id, notify_type, send_count FROM notifications"
_DELIVERIES = "SELECT notification_id, group_name, state, attempts, acked_at FROM deliveries"
_RECEIPTS = "SELECT notification_id, count(*) FROM receipts GROUP BY notification_id"
# History in the order it was written: rowid in SQLite, the identity column in PostgreSQL.
_HISTORY = "SELECT notification_id, group_name, kind, at, state FROM delivery_history ORDER BY {}"
_SETTLED_STATES = ("acked", "dead")
_UNACKED_ENDS = ("expired", "released", "nacked", "rejected")


@dataclass(frozen=True)
class NotificationRow:
    id: int
    payment_id: str
    notify_type: str
    send_count: int


@dataclass(frozen=True)
class DeliveryRow:
    state: str
    attempts: int
    acked_at: float | None


@dataclass
class StoreSnapshot:
    notifications: dict[str, NotificationRow] = field(default_factory=dict)  # by payment id
    deliveries: dict[Key, DeliveryRow] = field(default_factory=dict)
    receipts: dict[int, int] = field(default_factory=dict)  # HTTP requests stored per notification
    settled_at: dict[Key, float] = field(default_factory=dict)  # first acked/dead event
    leases_after_settle: dict[Key, int] = field(default_factory=dict)
    nacks: dict[Key, int] = field(default_factory=dict)  # nacked events per delivery
    # How leases ended that were not acked: (notification id, group, kind) -> count, for kinds
    # expired (ack deadline passed), released (the stream ended), nacked, rejected.
    lease_ends: dict[tuple[int, str, str], int] = field(default_factory=dict)

    def settle_time(self, key: Key) -> float | None:
        row = self.deliveries.get(key)
        if row is None or row.state not in _SETTLED_STATES:
            return None
        return self.settled_at.get(key, row.acked_at)


def read_store(url: str) -> StoreSnapshot:
    if url.startswith("sqlite:///"):
        return _read_sqlite(Path(url.removeprefix("sqlite:///")))
    if url.startswith(("postgresql://", "postgres://")):
        return _read_postgres(url)
    raise ValueError(f"unsupported store URL {url!r}")


def _read_sqlite(path: Path) -> StoreSnapshot:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return _snapshot(lambda query: conn.execute(query).fetchall(), "rowid")
    finally:
        conn.close()


def _read_postgres(url: str) -> StoreSnapshot:
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        return _snapshot(lambda query: conn.execute(query).fetchall(), "id")


def _snapshot(fetch: Any, order: str) -> StoreSnapshot:
    snap = StoreSnapshot()
    for nid, payment_id, notify_type, send_count in fetch(_NOTIFICATIONS):
        row = NotificationRow(int(nid), str(payment_id), str(notify_type), int(send_count))
        snap.notifications[row.payment_id] = row
    for nid, group, state, attempts, acked_at in fetch(_DELIVERIES):
        acked = None if acked_at is None else float(acked_at)
        snap.deliveries[(int(nid), str(group))] = DeliveryRow(str(state), int(attempts), acked)
    snap.receipts = {int(nid): int(count) for nid, count in fetch(_RECEIPTS)}
    _read_history(snap, fetch(_HISTORY.format(order)))
    return snap


def _read_history(snap: StoreSnapshot, rows: Iterable[Sequence[Any]]) -> None:
    for nid, group, kind, at, state in rows:
        key = (int(nid), str(group))
        if kind == "nacked":
            snap.nacks[key] = snap.nacks.get(key, 0) + 1
        if kind in _UNACKED_ENDS:
            end = (key[0], key[1], str(kind))
            snap.lease_ends[end] = snap.lease_ends.get(end, 0) + 1
        if key not in snap.settled_at:
            if state in _SETTLED_STATES:
                snap.settled_at[key] = float(at)
        elif kind == "leased":
            snap.leases_after_settle[key] = snap.leases_after_settle.get(key, 0) + 1


@dataclass(frozen=True)
class LogEvent:
    event: str
    group: str
    member: str
    t: float
    delivery_id: str = ""
    notification_id: str = ""
    payment_id: str = ""
    attempt: int = 0
    kind: str = ""
    status: str = ""
    stage: str = ""


def read_member_logs(folder: Path) -> list[LogEvent]:
    """Every line of every member log; a torn last line (a kill mid-write) is skipped."""
    events = []
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                raw = json.loads(line)
            except ValueError:
                continue
            events.append(_event(raw))
    return events


def _event(raw: dict[str, Any]) -> LogEvent:
    return LogEvent(
        event=str(raw.get("e", "")),
        group=str(raw.get("g", "")),
        member=str(raw.get("m", "")),
        t=float(raw.get("t", 0.0)),
        delivery_id=str(raw.get("d", "")),
        notification_id=str(raw.get("n", "")),
        payment_id=str(raw.get("p", "")),
        attempt=int(raw.get("a", 0)),
        kind=str(raw.get("k", "")),
        status=str(raw.get("s", "")),
        stage=str(raw.get("stage", "")),
    )
