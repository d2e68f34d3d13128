"""What the end-to-end multi-node tests check, against the store and what the subscribers saw.

- `wait_until_all_acked`: the store holds every expected (group, payment id) acked, and a member of
  each group received each one (an ack may be stored and its confirmation lost with a killed hub:
  the store is the judge of what was acknowledged).
- `delivered_after_stored_ack`: a delivery received after the store recorded its group's ack.
- `success_before_seen`: SUCCESS answered to Alipay before a member of every group had received it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from tests.multinode.ledger import Ledger
from tests.multinode.pgcluster import PgSchema

__all__ = ["delivered_after_stored_ack", "success_before_seen", "wait_until_all_acked"]

_ACKED_AT = """
SELECT d.group_name, n.payment_id, d.acked_at FROM deliveries d
JOIN notifications n ON n.id = d.notification_id WHERE d.state = 'acked'"""
# Callbacks run a moment after the hub sent the delivery; clocks are the same machine's.
_SLACK = 0.2


def wait_until_all_acked(
    pg: PgSchema, ledger: Ledger, expected: set[tuple[str, str]], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        stored = {(group, pid) for group, pid, _ in pg.rows(_ACKED_AT)}
        seen = {(d.group, d.payment_id) for d in ledger.of()}
        if expected <= stored and expected <= seen:
            break
        assert time.monotonic() < deadline, (
            f"not acked in the store: {sorted(expected - stored)[:10]}; "
            f"never delivered: {sorted(expected - seen)[:10]}"
        )
        time.sleep(0.2)
    time.sleep(1.0)  # a duplicate after an ack would arrive now


def delivered_after_stored_ack(pg: PgSchema, ledger: Ledger) -> list[str]:
    acked_at = {(group, pid): at for group, pid, at in pg.rows(_ACKED_AT)}
    return [
        f"{d.group} {d.payment_id} attempt {d.attempt} at +{d.received - at:.3f}s to {d.member}"
        for d in ledger.of()
        if (at := acked_at.get((d.group, d.payment_id))) is not None and d.received > at + _SLACK
    ]


def success_before_seen(
    success_at: Mapping[str, float], ledger: Ledger, groups: Iterable[str]
) -> list[str]:
    first_seen: dict[tuple[str, str], float] = {}
    for d in ledger.of():
        key = (d.group, d.payment_id)
        first_seen[key] = min(first_seen.get(key, d.received), d.received)
    return [
        pid
        for pid, at in success_at.items()
        if any(first_seen.get((g, pid), float("inf")) > at for g in groups)
    ]
