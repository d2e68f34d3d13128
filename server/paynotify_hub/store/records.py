"""Rows of the operator's read verbs into domain records, shared by both backends.

Both backends select the same columns in the same order (the `*_COLUMNS` notes below), so one set
of functions turns them into `GroupStats`, `NotificationRecord` and `DeadLetter`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from paynotify_hub.domain import (
    DeadLetter,
    DeliveryEvent,
    DeliveryRecord,
    DeliveryState,
    GroupStats,
    HistoryKind,
    NotificationRecord,
    ReceiptRecord,
)

__all__ = [
    "REPLAY_NOTE",
    "dead_letter_of",
    "group_stats_of",
    "notifications_of",
    "replay_since_note",
]

Row = Sequence[Any]

# The `detail` of REPLAYED history events.
REPLAY_NOTE = "dead letter replayed by an operator"


def replay_since_note(since: float) -> str:
    at = datetime.fromtimestamp(since, UTC).isoformat().replace("+00:00", "Z")
    return f"replayed by an operator: every notification first received since {at}"


def group_stats_of(
    groups: Sequence[str], state_rows: Iterable[Row], acked_rows: Iterable[Row] | None
) -> list[GroupStats]:
    """One `GroupStats` per name of `groups`, in order.

    `state_rows`: (group, state, count, due count, oldest first_received_at) for pending, leased
    and dead. `acked_rows`: (group, count), or None when acked deliveries were not counted.
    """
    found: defaultdict[str, dict[str, Any]] = defaultdict(dict)
    for group, state, count, due, oldest in state_rows:
        fields = found[group]
        if state == DeliveryState.PENDING:
            fields["pending_due"] = int(due or 0)
            fields["pending_later"] = int(count) - int(due or 0)
        elif state == DeliveryState.LEASED:
            fields["leased"] = int(count)
        elif state == DeliveryState.DEAD:
            fields["dead"] = int(count)
        if oldest is not None and state != DeliveryState.DEAD:
            current = fields.get("oldest_unacked_at")
            fields["oldest_unacked_at"] = float(oldest if current is None else min(current, oldest))
    if acked_rows is not None:
        acked = {group: int(count) for group, count in acked_rows}
        for group in groups:
            found[group]["acked"] = acked.get(group, 0)
    return [GroupStats(group, **found.get(group, {})) for group in groups]


def notifications_of(
    rows: Iterable[Row],
    receipt_rows: Iterable[Row],
    delivery_rows: Iterable[Row],
    history_rows: Iterable[Row],
) -> list[NotificationRecord]:
    """Assemble records; every child row starts with its notification id.

    rows: id, identity, notify_type, payment_request_id, payment_id, result_status, send_count,
    first_received_at, last_received_at, payload. receipts: id, received_at, client_id,
    request_time, request_id (oldest first). deliveries: id, group, state, attempts,
    available_at, lease_member, lease_expires_at, acked_at, dead_at, dead_reason (by group).
    history: id, group, kind, at, attempt, member, state, lease_expires_at, due_at, detail
    (in the order written).
    """
    receipts: defaultdict[int, list[ReceiptRecord]] = defaultdict(list)
    for nid, received_at, client_id, request_time, request_id in receipt_rows:
        receipts[nid].append(ReceiptRecord(float(received_at), client_id, request_time, request_id))
    history: defaultdict[tuple[int, str], list[DeliveryEvent]] = defaultdict(list)
    for row in history_rows:
        history[(row[0], row[1])].append(_event_of(row))
    deliveries: defaultdict[int, list[DeliveryRecord]] = defaultdict(list)
    for row in delivery_rows:
        deliveries[row[0]].append(_delivery_of(row, history.get((row[0], row[1]), [])))
    return [
        _notification_of(row, receipts.get(row[0], []), deliveries.get(row[0], [])) for row in rows
    ]


def dead_letter_of(row: Row) -> DeadLetter:
    """id, group, notify_type, payment_request_id, payment_id, attempts, reason, dead_at,
    first_received_at, payload."""
    nid, group, notify_type, request_id, payment_id, attempts, reason, dead_at, first, payload = row
    return DeadLetter(
        notification_id=int(nid),
        group=group,
        notify_type=notify_type,
        payment_request_id=request_id,
        payment_id=payment_id,
        attempts=int(attempts),
        reason=reason or "",
        dead_at=float(dead_at),
        first_received_at=float(first),
        payload=bytes(payload),
    )


def _notification_of(
    row: Row, receipts: list[ReceiptRecord], deliveries: list[DeliveryRecord]
) -> NotificationRecord:
    nid, identity, notify_type, request_id, payment_id, status, sends, first, last, payload = row
    return NotificationRecord(
        notification_id=int(nid),
        identity=identity,
        notify_type=notify_type,
        payment_request_id=request_id,
        payment_id=payment_id,
        result_status=status,
        send_count=int(sends),
        first_received_at=float(first),
        last_received_at=float(last),
        payload=bytes(payload),
        receipts=tuple(receipts),
        deliveries=tuple(deliveries),
    )


def _delivery_of(row: Row, history: list[DeliveryEvent]) -> DeliveryRecord:
    _, group, state, attempts, available_at, member, expires, acked_at, dead_at, reason = row
    leased = state == DeliveryState.LEASED
    return DeliveryRecord(
        group=group,
        state=DeliveryState(state),
        attempts=int(attempts),
        available_at=float(available_at),
        lease_member=(member or "") if leased else "",
        lease_expires_at=_float(expires) if leased else None,
        acked_at=_float(acked_at) if state == DeliveryState.ACKED else None,
        dead_at=_float(dead_at) if state == DeliveryState.DEAD else None,
        dead_reason=(reason or "") if state == DeliveryState.DEAD else "",
        history=tuple(history),
    )


def _event_of(row: Row) -> DeliveryEvent:
    _, group, kind, at, attempt, member, state, expires, due, detail = row
    return DeliveryEvent(
        group=group,
        kind=HistoryKind(kind),
        at=float(at),
        attempt=int(attempt),
        member=member,
        state=DeliveryState(state),
        lease_expires_at=_float(expires),
        due_at=_float(due),
        detail=detail,
    )


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)
