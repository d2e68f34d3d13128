"""Printing the figures of a run, and saving them as JSON beside its logs."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chaos.verify import Figures

__all__ = ["render", "save", "to_json"]


def _seconds(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}s"


def render(fig: Figures) -> str:
    """The figures as an aligned text block."""
    verdict = "PASSED" if fig.passed else "FAILED"
    lines = [
        f"== chaos run: {fig.label} -- {verdict} ({fig.duration:.0f}s)",
        f"notifications sent       {fig.distinct} distinct, {fig.duplicate_streams} duplicate "
        f"senders, {fig.http_requests} HTTP requests",
        f"replies                  {_pairs(fig.replies)}",
        f"acknowledged (SUCCESS)   {fig.acknowledged} of {fig.distinct}; not acknowledged "
        f"{fig.not_acknowledged}; unfinished {fig.unfinished}",
        f"lost                     {fig.lost}",
        f"violations               {fig.violations} (of which SUCCESS for a dead letter never "
        f"received: {fig.success_unseen})",
        f"time to SUCCESS (real)   p50 {_seconds(fig.ack_time['p50'])}  "
        f"p90 {_seconds(fig.ack_time['p90'])}  p99 {_seconds(fig.ack_time['p99'])}  "
        f"max {_seconds(fig.ack_time['max'])}  (time scale 1:{fig.time_scale:.0f})",
        f"attempts to SUCCESS      {_pairs(fig.attempts_to_success)}",
        f"faults injected          {sum(fig.faults.values())}: {_pairs(fig.faults)}",
        f"crashes inside callbacks {fig.crashes_in_callback} (from the members' logs)",
        f"healthy at the end       {'yes' if fig.healthy_at_end else 'NO'} ({fig.health_detail})",
    ]
    lines += _group_table(fig)
    if fig.anomalies:
        lines.append(f"anomalies                {_pairs(fig.anomalies)}")
    for error in fig.fault_errors:
        lines.append(f"fault error              {error}")
    for what, examples in fig.examples.items():
        for text in examples:
            lines.append(f"  e.g. {what}: {text}")
    for failure in fig.failures:
        lines.append(f"FAILURE: {failure}")
    return "\n".join(lines)


# Explained in docs/chaos.md ("Per group").
_COLUMNS = (
    "received", "distinct", "redelivered", "extra", "leases", "unseen", "expired", "released",
    "nacks", "lib-nacks", "post-ack", "acked", "dead", "dead-unseen", "unsettled",
)  # fmt: skip


def _group_table(fig: Figures) -> list[str]:
    widths = [max(len(name), 6) for name in _COLUMNS]
    lines = ["per group".ljust(24) + _row(_COLUMNS, widths)]
    for g in fig.groups:
        values = (
            g.received, g.distinct, g.redelivered_notifications, g.redeliveries,
            g.store_attempts, g.unseen_leases, g.expired, g.released, g.nacks, g.nacks_unseen,
            g.post_ack_deliveries,
            g.acked, g.dead, g.dead_unseen, g.unsettled,
        )  # fmt: skip
        name = f"  {g.group} ({'required' if g.required else 'best-effort'})"
        lines.append(name.ljust(24) + _row([str(v) for v in values], widths))
    return lines


def _row(cells: Sequence[str], widths: Sequence[int]) -> str:
    return " ".join(cell.rjust(width) for cell, width in zip(cells, widths, strict=True))


def _pairs(values: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in values.items()) or "none"


def to_json(fig: Figures) -> dict[str, Any]:
    data = dataclasses.asdict(fig)
    data["passed"] = fig.passed
    return data


def save(figures: list[Figures], path: Path) -> None:
    data = [to_json(f) for f in figures]
    path.write_text(json.dumps(data, indent=2, default=str, allow_nan=True) + "\n")
