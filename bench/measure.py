"""One measured point: run wrk against a URL and account the CPU every process spent meanwhile."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.bodies import Corpus
from bench.procs import CLOCK_TICKS, CpuSnapshot, Proc
from bench.wrk import Load, WrkResult, run_wrk

__all__ = ["Point", "measure", "postgres_cpu"]


@dataclass
class Point:
    """A measured load: what wrk saw plus CPU per request of each role."""

    name: str
    label: str
    kind: str
    wrk: WrkResult
    cpu_us_per_request: dict[str, float]
    other_load_cores: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok_rps(self) -> float:
        return self.wrk.ok_rps

    @property
    def p50(self) -> float:
        return self.wrk.latency_ms.get("p50", 0.0)

    @property
    def p99(self) -> float:
        return self.wrk.latency_ms.get("p99", 0.0)

    def to_json(self) -> dict[str, Any]:
        w = self.wrk
        return {
            "name": self.name,
            "label": self.label,
            "kind": self.kind,
            "connections": w.connections,
            "duration_s": round(w.duration_s, 3),
            "requests": w.requests,
            "success": w.success,
            "rps": round(w.rps, 1),
            "ok_rps": round(w.ok_rps, 1),
            "errors": w.errors,
            "error_detail": w.error_text(),
            "latency_ms": {k: round(v, 3) for k, v in w.latency_ms.items()},
            "repeated_identities": w.wraps,
            "rate_target": round(w.rate_target, 1),
            "late_sends": w.late,
            "max_send_lag_ms": round(w.max_lag_ms, 2),
            "cpu_us_per_request": {k: round(v, 1) for k, v in self.cpu_us_per_request.items()},
            "other_load_cores": round(self.other_load_cores, 2),
            **self.extra,
        }


def postgres_cpu() -> dict[int, float]:
    """CPU seconds of every PostgreSQL server process (pid -> seconds), for the PostgreSQL point."""
    out: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        if comm == "postgres" or comm.startswith("postgres:"):
            fields = stat.rsplit(")", 1)[1].split()
            out[int(entry.name)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return out


PUBLISH_SUM = "paynotify_bridge_publish_seconds_sum"
PUBLISH_COUNT = "paynotify_bridge_publish_seconds_count"


def bridge_publish_totals(url: str) -> tuple[float, float] | None:
    """(seconds, calls) of the bridge's Publish histogram from its /metrics, None if unavailable."""
    metrics_url = url.split("//", 1)[0] + "//" + url.split("//", 1)[1].split("/", 1)[0] + "/metrics"
    try:
        with urllib.request.urlopen(metrics_url, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    totals = {PUBLISH_SUM: 0.0, PUBLISH_COUNT: 0.0}
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in totals:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return totals[PUBLISH_SUM], totals[PUBLISH_COUNT]


def measure(
    name: str,
    label: str,
    kind: str,
    url: str,
    corpus: Corpus,
    load: Load,
    members: list[Proc],
    with_postgres: bool = False,
) -> Point:
    """Run `load` against `url`; CPU per request of each member role (and wrk, and PostgreSQL).

    For the pipeline it also reads the bridge's Publish histogram before and after, which splits
    the mean latency into the hub's part (Publish: store, deliver, ack) and the bridge's own.
    """
    bridge = any(p.role == "bridge" for p in members)
    publish_before = bridge_publish_totals(url) if bridge else None
    before = CpuSnapshot.take(members)
    pg_before = postgres_cpu() if with_postgres else {}
    result = run_wrk(url, corpus, load)
    pg_after = postgres_cpu() if with_postgres else {}
    spent = CpuSnapshot.take(members).since(before)
    publish_after = bridge_publish_totals(url) if bridge else None
    by_role = dict(spent.by_role)
    by_role["wrk"] = result.cpu_s
    if with_postgres:
        by_role["postgres"] = sum(v - pg_before.get(pid, 0.0) for pid, v in pg_after.items())
    ours = sum(by_role.values())
    # /proc/stat counts every core; what none of our processes spent is someone else's load.
    other = max(0.0, spent.system - ours)
    requests = max(1, result.requests)
    per_request = {role: s / requests * 1e6 for role, s in sorted(by_role.items())}
    point = Point(name, label, kind, result, per_request, other / max(result.duration_s, 1e-9))
    point.extra["latency_mean_ms"] = round(result.raw["latency_us"]["mean"] / 1000, 3)
    if publish_before and publish_after and publish_after[1] > publish_before[1]:
        seconds = publish_after[0] - publish_before[0]
        point.extra["publish_mean_ms"] = round(
            seconds / (publish_after[1] - publish_before[1]) * 1e3, 3
        )
    return point
