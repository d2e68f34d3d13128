"""The results of one run: the points, the targets of issue 6 checked against them, one table."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from bench.measure import Point

__all__ = ["TARGETS", "MemorySample", "Results", "Target", "render", "repeat_name"]

# Someone else using this much CPU during a point makes it suspect (2 shared cores).
OTHER_LOAD_WARN_CORES = 0.25
# A paced run whose sends were late this often measured less than the full latency.
LATE_SENDS_WARN = 0.01
# A baseline measured again next to its point that differs this much from its first measurement:
# the machine's speed moved during the run (the ratio uses the neighbour; the caveat says so).
DRIFT_WARN = 0.20
MEMORY_FLAT_RATIO = 0.10
MEMORY_FLAT_MIN_KIB = 10 * 1024


def repeat_name(name: str, index: int) -> str:
    """The name of the `index`-th measurement (from 0) of a point measured again (`--repeat`)."""
    return name if index == 0 else f"{name} #{index + 1}"


@dataclass(frozen=True)
class Target:
    """A goal of issue 6: `point` against `baseline` (a ratio of SUCCESS req/s), or a p99 bound."""

    title: str
    point: str
    baseline: str | None
    bound: float
    kind: str = "ratio"  # "ratio": point/baseline >= bound; "p99": point's p99 <= bound ms

    def describe(self) -> str:
        return f"≥ {self.bound:.0%}" if self.kind == "ratio" else f"≤ {self.bound:g} ms"


TARGETS = (
    Target("pipeline vs bare, 16 conns", "pipeline@16", "bare@16", 0.50),
    Target("pipeline vs bare, 64 conns", "pipeline@64", "bare@64", 0.40),
    Target("p99 at half the pipeline's max", "paced@16", None, 10.0, kind="p99"),
    Target("duplicates vs bare", "duplicate@16", "bare@16", 0.80),
    Target("duplicates signed anew vs bare", "duplicate-resigned@16", "bare@16", 0.80),
    Target("fan-out 16 groups vs 1", "fanout16@16", "fanout1@16", 0.50),
    Target("PostgreSQL vs SQLite", "postgres@16", "pipeline@16", 0.60),
)


@dataclass(frozen=True)
class MemorySample:
    notifications: int
    elapsed_s: float
    rss_kib: dict[str, int]
    chunk_ok_rps: float
    chunk_errors: int


@dataclass
class Results:
    meta: dict[str, Any]
    points: dict[str, Point] = field(default_factory=dict)
    # point -> its baseline measured right next to it (the ratio uses that one, not the row
    # measured minutes before: this machine's speed drifts).
    pairs: dict[str, str] = field(default_factory=dict)
    memory: list[MemorySample] = field(default_factory=list)
    memory_target: int = 0
    notes: list[str] = field(default_factory=list)

    def add(self, point: Point) -> Point:
        self.points[point.name] = point
        return point

    def get(self, name: str) -> Point | None:
        return self.points.get(name)

    def neighbour(self, name: str) -> Point | None:
        """The baseline measured right after point `name`, if one was."""
        return self.points.get(self.pairs.get(name, ""))

    def repeats(self, name: str) -> list[Point]:
        """`name`, then its measurements again under `--repeat` (#2, #3, ...), those present."""
        found = []
        for index in range(len(self.points)):
            point = self.points.get(repeat_name(name, index))
            if point is None:
                break
            found.append(point)
        return found

    def note(self, text: str) -> None:
        print(f"note: {text}", flush=True)
        self.notes.append(text)

    def verdicts(self) -> list[dict[str, Any]]:
        return [_verdict(self, t) for t in TARGETS] + _memory_verdicts(self)

    def to_json(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "points": {name: p.to_json() for name, p in self.points.items()},
            "pairs": self.pairs,
            "targets": self.verdicts(),
            "memory": {
                "target_notifications": self.memory_target,
                "samples": [
                    {
                        "notifications": s.notifications,
                        "elapsed_s": round(s.elapsed_s, 1),
                        "rss_kib": s.rss_kib,
                        "chunk_ok_rps": round(s.chunk_ok_rps, 1),
                        "chunk_errors": s.chunk_errors,
                    }
                    for s in self.memory
                ],
            },
            "notes": self.notes,
        }


def _caveats(point: Point) -> list[str]:
    """What makes a point's number suspect, each prefixed with the point's name."""
    out = []
    if point.wrk.errors:
        out.append(f"{point.wrk.errors} not SUCCESS")
    if point.wrk.wraps and point.kind != "duplicate":
        out.append("identities repeated")
    if point.other_load_cores > OTHER_LOAD_WARN_CORES:
        out.append(f"other load {point.other_load_cores:.2f} cores")
    if point.wrk.rate_target and point.wrk.late > LATE_SENDS_WARN * max(1, point.wrk.requests):
        out.append(f"{point.wrk.late} late sends")
    return [f"{point.name}: {c}" for c in out]


def _verdict(results: Results, target: Target) -> dict[str, Any]:
    point = results.get(target.point)
    first = results.get(target.baseline) if target.baseline else None
    base_name = results.pairs.get(target.point, target.baseline)
    base = results.get(base_name) if base_name else None
    row: dict[str, Any] = {
        "target": target.title,
        "point": target.point,
        "bound": target.describe(),
    }
    if point is None or (target.baseline and base is None):
        return {**row, "value": None, "verdict": "NOT RUN"}
    if target.kind == "p99":
        value = point.p99
        ok = value <= target.bound
    else:
        assert base is not None
        value = point.ok_rps / base.ok_rps if base.ok_rps else 0.0
        ok = value >= target.bound
    caveats = _caveats(point) + (_caveats(base) if base else [])
    ratios = _repeated_ratios(results, target) if target.kind == "ratio" else []
    if len(ratios) > 1:
        value = statistics.median(ratios)
        ok = value >= target.bound
        row["repeats"] = [round(r, 4) for r in ratios]
        for again in results.repeats(target.point)[1:]:
            paired = results.neighbour(again.name)
            caveats += _caveats(again) + (_caveats(paired) if paired else [])
    if base and first and base is not first and first.ok_rps:
        drift = base.ok_rps / first.ok_rps - 1
        if abs(drift) > DRIFT_WARN:
            caveats.append(f"{target.baseline} moved {drift:+.0%} during the run")
    return {
        **row,
        "baseline": base_name,
        "value": round(value, 4),
        "verdict": "PASS" if ok else "MISS",
        "caveats": caveats,
    }


def _repeated_ratios(results: Results, target: Target) -> list[float]:
    """The ratio of each measurement of the target's point (`--repeat`) to the baseline measured
    right after it; only measurements with such a neighbour count."""
    ratios = []
    for point in results.repeats(target.point):
        base = results.neighbour(point.name)
        if base is not None and base.ok_rps:
            ratios.append(point.ok_rps / base.ok_rps)
    return ratios


def _memory_verdicts(results: Results) -> list[dict[str, Any]]:
    """RSS after the first sample vs the last: flat if it grew by ≤ 10% (or ≤ 10 MiB)."""
    samples = results.memory
    if len(samples) < 2:
        return []
    first, last = samples[0], samples[-1]
    out = []
    for role in ("hub", "bridge"):
        start, end = first.rss_kib.get(role, 0), last.rss_kib.get(role, 0)
        if not start:
            continue
        growth = end - start
        ok = growth <= max(MEMORY_FLAT_MIN_KIB, MEMORY_FLAT_RATIO * start)
        out.append(
            {
                "target": f"{role} RSS stays flat",
                "point": "memory",
                "bound": f"≤ +{MEMORY_FLAT_RATIO:.0%} (or +{MEMORY_FLAT_MIN_KIB // 1024} MiB)",
                "value": round(growth / start, 4),
                "from_kib": start,
                "to_kib": end,
                "from_notifications": first.notifications,
                "to_notifications": last.notifications,
                "verdict": "PASS" if ok else "MISS",
                "caveats": []
                if last.notifications >= results.memory_target
                else [f"only {last.notifications} of {results.memory_target} sent"],
            }
        )
    return out


# ---- the table -------------------------------------------------------------------------------

ROWS = (
    ("bare@16", "bare limit"),
    ("bare@64", "bare limit"),
    ("pipeline@16", "pipeline, SQLite, 1 group"),
    ("pipeline@64", "pipeline, SQLite, 1 group"),
    ("paced@16", "pipeline paced at ½ max"),
    ("duplicate@16", "duplicates, byte for byte"),
    ("duplicate-resigned@16", "duplicates, signed anew"),
    ("duplicate-hub@16", "duplicates, no bridge cache"),
    ("fanout1@16", "fan-out 1 group"),
    ("fanout4@16", "fan-out 4 groups"),
    ("fanout16@16", "fan-out 16 groups"),
    ("postgres@16", "pipeline, PostgreSQL"),
)
HEADER = (
    "scenario", "conns", "ok req/s", "p50 ms", "p99 ms", "errors",
    "CPU µs/req", "compared with", "value", "target", "verdict",
)  # fmt: skip


def _cpu_text(point: Point) -> str:
    cpu = point.cpu_us_per_request
    if point.kind == "bare":
        return f"bare {cpu.get('bare', 0):.0f}"
    parts = [f"{cpu.get(r, 0):.0f}" for r in ("bridge", "hub", "subscriber")]
    text = "/".join(parts)
    if "postgres" in cpu:
        text += f" +pg {cpu['postgres']:.0f}"
    return text


def _point_cells(label: str, point: Point) -> list[str]:
    w = point.wrk
    rps = f"{point.ok_rps:,.0f}"
    if w.rate_target:
        rps += f" (of {w.rate_target:,.0f})"
    scenario = label
    errors = f"{w.errors:,}" + (" !" if w.errors else "")
    return [
        scenario, str(w.connections), rps, f"{point.p50:.1f}", f"{point.p99:.1f}",
        errors, _cpu_text(point),
    ]  # fmt: skip


def _target_cells(verdict: dict[str, Any] | None) -> list[str]:
    if verdict is None:
        return ["", "", "", ""]
    value = verdict["value"]
    if value is None:
        return [verdict.get("baseline") or "", "", verdict["bound"], verdict["verdict"]]
    shown = f"{value:.1%}" if verdict["bound"].startswith("≥") else f"{value:.1f} ms"
    text = verdict["verdict"] + ("".join(f"; {c}" for c in verdict.get("caveats", [])))
    if verdict.get("repeats"):
        each = ", ".join(f"{r:.1%}" for r in verdict["repeats"])
        text += f"; median of {len(verdict['repeats'])}: {each}"
    return [verdict.get("baseline") or "p99", shown, verdict["bound"], text]


def render(results: Results) -> str:
    verdicts = {v["point"]: v for v in results.verdicts() if v["point"] != "memory"}
    rows: list[list[str]] = []
    for name, label in ROWS:
        for index, point in enumerate(results.repeats(name)):
            shown = label if index == 0 else f"{label} #{index + 1}"
            verdict = verdicts.get(name) if index == 0 else None
            rows.append(_point_cells(shown, point) + _target_cells(verdict))
            paired = results.neighbour(point.name)
            if paired is not None:
                rows.append(_point_cells(f"  {paired.label}, next to it", paired) + [""] * 4)
    for v in results.verdicts():
        if v["point"] == "memory":
            rows.append(_memory_cells(v))
    for v in results.verdicts():
        if v["verdict"] == "NOT RUN":
            rows.append([v["target"], "", "", "", "", "", "", "", "", v["bound"], "NOT RUN"])
    return _format(rows) + _memory_series(results) + _notes(results)


def _memory_cells(v: dict[str, Any]) -> list[str]:
    mib = f"{v['from_kib'] / 1024:.1f} → {v['to_kib'] / 1024:.1f} MiB"
    reach = f"{v['from_notifications']:,} → {v['to_notifications']:,} notifs"
    verdict = v["verdict"] + "".join(f"; {c}" for c in v["caveats"])
    return [v["target"], "16", reach, "", "", "", mib, "its first sample", f"{v['value']:+.0%}",
            v["bound"], verdict]  # fmt: skip


def _format(rows: list[list[str]]) -> str:
    table = [list(HEADER), *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADER))]
    right = {1, 2, 3, 4, 5, 8}
    lines = []
    for n, row in enumerate(table):
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


def _memory_series(results: Results) -> str:
    if not results.memory:
        return ""
    parts = [
        f"{s.notifications // 1000}k: hub {s.rss_kib.get('hub', 0) / 1024:.0f}"
        f"/bridge {s.rss_kib.get('bridge', 0) / 1024:.0f} MiB @ {s.chunk_ok_rps:,.0f}/s"
        for s in results.memory
    ]
    return "\nRSS by notifications sent: " + ", ".join(parts) + "\n"


def _notes(results: Results) -> str:
    return "".join(f"note: {n}\n" for n in results.notes)
