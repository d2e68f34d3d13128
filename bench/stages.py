"""Where a notification's latency goes inside the hub, stage by stage, under wrk load.

    python -m bench.stages [--rate 500] [--connections 16] [--duration 10] [--groups 1]

Starts one pipeline with the hub under `bench.hubwrap --stages`, loads it (paced at `--rate`
requests/s, or as fast as it goes with `--rate 0`) and prints, for the notifications published
during the load, the percentiles of each stage of their way through the hub:

    received → appended → leased → written → ack in → ack stored → answered

- received: the hub's publish starts (the request was read and validated);
- appended: the store's append returned (stored durably: the commit is done);
- leased: a dispatch loop turned a lease of it into a delivery (the first group's, with several);
- written: that delivery left the Subscribe stream's writer (handed to gRPC);
- ack in: the ack reached the hub (the last group's, with several groups);
- ack stored: the store's ack returned (committed);
- answered: the publish returned its outcome to the bridge's stream.

With the SQLite store it also prints the worker thread's group commits: how long a verb waited for
the worker, a batch's wall and CPU time on the worker, and how long its answer then took to reach
the event loop. The rest of the latency wrk measured (its mean minus the hub's) is the bridge's:
waitress, verification, parsing, and the hops to and from the hub.

The hooks live in the hub process only (`install()`, called by bench.hubwrap); no project file
changes. They wrap private parts of the hub (the Subscribe stream's writer, the SQLite worker), so
`tests/bench/test_stages.py` runs them against a real hub to keep them in step with the code.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.bodies import ensure_corpus
from bench.pipeline import Pipeline, PipelineOptions
from bench.procs import ProcessGroup, ask_by_signal
from bench.wrk import Load, require_wrk, run_wrk

__all__ = ["MARKER", "STAGES", "StageTrace", "install", "main"]

MARKER = "STAGES "
STAGES = (
    "received",
    "appended",
    "leased",
    "written",
    "ack in",
    "ack stored",
    "answered",
)
# Notifications traced between two reports at most: a hub left running under the hooks for hours
# stops recording rather than growing without bound.
MAX_TRACED = 500_000
CORPUS = 100_000


class StageTrace:
    """Timestamps (perf_counter) of each notification's stages, and the SQLite worker's batches."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.since = time.perf_counter()
        self.stamps: dict[int, dict[str, float]] = {}
        self.worker: dict[str, list[float]] = {
            "wait": [],
            "batch wall": [],
            "batch cpu": [],
            "to the loop": [],
            "batch size": [],
        }

    def stamp(
        self, notification_id: int, stage: str, *, at: float | None = None, last: bool = False
    ) -> None:
        """Note `stage` at `at` (default now): its first time, or with `last` its latest (the
        last group's ack)."""
        at = time.perf_counter() if at is None else at
        with self._lock:
            stamps = self.stamps.get(notification_id)
            if stamps is None:
                if len(self.stamps) >= MAX_TRACED:
                    return
                stamps = self.stamps[notification_id] = {}
            if last or stage not in stamps:
                stamps[stage] = at

    def record(self, name: str, value: float) -> None:
        with self._lock:
            self.worker[name].append(value)

    def report(self) -> dict[str, Any]:
        """Percentiles of every stage over the notifications that went all the way, then reset."""
        with self._lock:
            now = time.perf_counter()
            window, self.since = now - self.since, now
            stamps, self.stamps = self.stamps, {}
            worker, self.worker = self.worker, {k: [] for k in self.worker}
        done = [s for s in stamps.values() if all(stage in s for stage in STAGES)]
        steps: dict[str, Any] = {}
        slowest = sorted(done, key=lambda s: s["answered"] - s["received"])
        slowest = slowest[len(slowest) - max(1, len(slowest) // 100) :] if slowest else []
        for start, end in [*itertools.pairwise(STAGES), (STAGES[0], STAGES[-1])]:
            values = [(s[end] - s[start]) * 1e3 for s in done]
            spread = _spread(values)
            if slowest:
                spread["slowest 1% mean"] = sum((s[end] - s[start]) * 1e3 for s in slowest) / len(
                    slowest
                )
            steps[f"{start} → {end}"] = spread
        walls = worker.get("batch wall", [])
        return {
            "notifications": len(done),
            "window_s": window,
            # the share of the window the worker thread spent in batches (1.0: always busy)
            "sqlite_worker_busy": sum(walls) / window if window > 0 else 0.0,
            "sqlite_batches": len(walls),
            "stages_ms": steps,
            "sqlite_worker": {
                k: _spread([x if k == "batch size" else x * 1e3 for x in v])
                for k, v in worker.items()
                if v
            },
        }


def _spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    v = sorted(values)
    at = lambda q: v[min(len(v) - 1, int(len(v) * q))]  # noqa: E731
    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "mean": sum(v) / len(v), "n": len(v)}


@contextmanager
def install(trace: StageTrace) -> Iterator[StageTrace]:
    """Hook the hub's classes in this process to stamp `trace`; undone on exit."""
    from paynotify_hub import broker, service
    from paynotify_hub.member import parse_delivery_id
    from paynotify_hub.store import sqlite
    from paynotify_hub.store.postgres import PostgresStore
    from paynotify_hub.store.sqlite import SQLiteStore

    undo: list[Callable[[], None]] = []

    def patch(owner: Any, name: str, make: Callable[[Any], Any]) -> None:
        original = getattr(owner, name)
        setattr(owner, name, make(original))
        undo.append(lambda: setattr(owner, name, original))

    def publish(original: Any) -> Any:
        async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            result = await original(self, *args, **kwargs)
            trace.stamp(result.notification_id, "received", at=started)
            trace.stamp(result.notification_id, "answered")
            return result

        return wrapper

    def append(original: Any) -> Any:
        async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = await original(self, *args, **kwargs)
            trace.stamp(result.notification_id, "appended")
            return result

        return wrapper

    def fill_delivery(original: Any) -> Any:
        def wrapper(delivery: Any, lease: Any) -> None:
            trace.stamp(lease.notification_id, "leased")
            original(delivery, lease)

        return wrapper

    def next_response(original: Any) -> Any:
        async def wrapper(self: Any) -> Any:
            response = await original(self)
            for delivery in () if response is None else response.deliveries:
                key = parse_delivery_id(delivery.delivery_id)
                if key is not None:
                    trace.stamp(key[0], "written")
            return response

        return wrapper

    def ack_many(original: Any) -> Any:
        async def wrapper(self: Any, member: Any, delivery_ids: Any) -> Any:
            keys = [key for key in map(parse_delivery_id, delivery_ids) if key is not None]
            for key in keys:
                trace.stamp(key[0], "ack in", last=True)
            statuses = await original(self, member, delivery_ids)
            for key in keys:
                trace.stamp(key[0], "ack stored", last=True)
            return statuses

        return wrapper

    def queue(original: Any) -> Any:
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            future = original(self, *args, **kwargs)
            future._stage_queued = time.perf_counter()
            return future

        return wrapper

    def run_batch(original: Any) -> Any:
        def wrapper(self: Any, batch: list[Any]) -> None:
            started, cpu = time.perf_counter(), time.thread_time()
            for job in batch:
                trace.record("wait", started - getattr(job.future, "_stage_queued", started))
            try:
                original(self, batch)
            finally:
                ended = time.perf_counter()
                trace.record("batch wall", ended - started)
                trace.record("batch cpu", time.thread_time() - cpu)
                trace.record("batch size", len(batch))
                for job in batch:
                    job.future._stage_ran = ended

        return wrapper

    def settle(original: Any) -> Any:
        def wrapper(jobs: list[Any]) -> None:
            now = time.perf_counter()
            for job in jobs:
                ran = getattr(job.future, "_stage_ran", None)
                if ran is not None:
                    trace.record("to the loop", now - ran)
            original(jobs)

        return wrapper

    patch(broker.Broker, "publish", publish)
    patch(broker.Broker, "ack_many", ack_many)
    patch(SQLiteStore, "append", append)
    patch(PostgresStore, "append", append)
    patch(service, "fill_delivery", fill_delivery)
    patch(service._Stream, "next_response", next_response)
    patch(sqlite._Worker, "queue", queue)
    patch(sqlite._Worker, "_run_batch", run_batch)
    patch(sqlite, "_settle", settle)
    try:
        yield trace
    finally:
        for restore in reversed(undo):
            restore()


def format_report(report: dict[str, Any]) -> str:
    lines = [f"hub stages, ms, over {report['notifications']} notifications:"]
    lines.append(f"  {'stage':<28} {'p50':>7} {'p90':>7} {'p99':>7} {'mean':>7} {'slowest 1%':>11}")
    for name, s in report["stages_ms"].items():
        if s:
            lines.append(
                f"  {name:<28} {s['p50']:7.2f} {s['p90']:7.2f} {s['p99']:7.2f} {s['mean']:7.2f}"
                f" {s.get('slowest 1% mean', 0.0):11.2f}"
            )
    if report["sqlite_worker"]:
        lines.append(
            f"SQLite worker: {report['sqlite_batches']} batches in {report['window_s']:.1f} s, "
            f"busy {report['sqlite_worker_busy']:.0%} of the time (ms; batch size in verbs):"
        )
        for name, s in report["sqlite_worker"].items():
            lines.append(
                f"  {name:<28} {s['p50']:7.2f} {s['p90']:7.2f} {s['p99']:7.2f} {s['mean']:7.2f}"
            )
    return "\n".join(lines)


def _report(pipeline: Pipeline) -> dict[str, Any]:
    """Ask the traced hub for its report (SIGUSR1)."""
    assert pipeline.hub is not None
    return ask_by_signal(pipeline.hub, MARKER)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--rate", type=float, default=0.0, help="requests/s, paced (0: full speed)")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured (default 10)")
    p.add_argument("--groups", type=int, default=1)
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--cache", default="bench-results/cache")
    a = p.parse_args(argv)
    require_wrk()
    corpus = ensure_corpus(Path(a.cache), CORPUS)
    workdir = Path(tempfile.mkdtemp(prefix="paynotify-stages-"))
    procs = ProcessGroup(workdir)
    command = (sys.executable, "-m", "bench.hubwrap", "--stages")
    options = replace(PipelineOptions(a.log_level), hub_command=command)
    store = f"sqlite:///{workdir / 'hub.db'}"
    pipeline = Pipeline("stages", store, a.groups, corpus, procs, options)

    def load(seconds: float) -> Load:
        count = min(pipeline.cursor.remaining, int((a.rate or 5_000) * seconds * 1.5) + 2_000)
        return Load(a.connections, seconds, pipeline.cursor.position, count, rate=a.rate)

    try:
        pipeline.start()
        pipeline.cursor.take(run_wrk(pipeline.url, corpus, load(2)).consumed)
        _report(pipeline)  # drops what the start and the warm-up stamped
        r = run_wrk(pipeline.url, corpus, load(a.duration))
        report = _report(pipeline)
    finally:
        procs.stop_all()
    lat, mean = r.latency_ms, r.raw["latency_us"]["mean"] / 1000
    paced = f", paced at {a.rate:g}/s" if a.rate else ""
    print(f"load: {r.ok_rps:,.0f} SUCCESS/s, {a.connections} connections{paced}, errors {r.errors}")
    print(f"wrk latency ms: p50 {lat['p50']:.2f} p90 {lat['p90']:.2f} p99 {lat['p99']:.2f}", end="")
    print(f" mean {mean:.2f}")
    print(format_report(report))
    hub = report["stages_ms"].get(f"{STAGES[0]} → {STAGES[-1]}", {}).get("mean")
    if hub is not None:
        print(f"outside the hub (wrk's mean minus the hub's): {mean - hub:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
