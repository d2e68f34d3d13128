"""`make bench` / `python -m bench.run`: measure the pipeline against the bare HTTP limit.

Starts everything on 127.0.0.1, loads it with wrk, stops every process it started, prints one table
and saves it as JSON in bench-results/<timestamp>.json and bench-results/latest.json.
See docs/benchmark.md for what each row means.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.bodies import Corpus, ensure_corpus
from bench.measure import Point, measure
from bench.pipeline import Pipeline, PipelineOptions, bare_server, postgres_schema
from bench.procs import CpuSnapshot, Proc, ProcessGroup, StartError, rss_kib
from bench.report import MemorySample, Results, render, repeat_name
from bench.wrk import Load, WrkError, require_wrk, run_wrk

__all__ = ["Settings", "main"]

SCENARIOS = ("bare", "pipeline", "paced", "duplicate", "fanout", "postgres", "memory")
DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
PG_DSN_ENV = "PAYNOTIFY_BENCH_POSTGRES_DSN"
# Requests the bare app's wrk slice holds (it stores nothing, so wrapping around is harmless).
BARE_SLICE = 150_000
# Fewer unused records than this before a point: the point would repeat identities.
LOW_CORPUS = 2_000
# Before a point, wait (up to --wait-quiet) until processes outside the benchmark use less.
QUIET_CORES = 0.3


@dataclass(frozen=True)
class Settings:
    duration: float
    warmup: float
    low: int
    high: int
    fanout: tuple[int, ...]
    memory_count: int
    memory_samples: int
    memory_max_s: float
    duplicates: int
    corpus: int
    postgres_dsn: str
    scenarios: tuple[str, ...]
    wrk_threads: int
    out: Path
    cache: Path
    keep_logs: bool
    quick: bool
    wait_quiet: float
    nice: int
    options: PipelineOptions
    repeat: int = 1


def parse_args(argv: list[str] | None) -> Settings:
    p = argparse.ArgumentParser(
        prog="python -m bench.run", description=(__doc__ or "").splitlines()[0]
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run, about a minute (3 s points, 10k for memory)",
    )
    p.add_argument(
        "--duration", type=float, help="seconds per measured point (default 10; quick 3)"
    )
    p.add_argument(
        "--warmup",
        type=float,
        help="unmeasured seconds before each server's first point (default 2; quick 1)",
    )
    p.add_argument(
        "--connections", default="16,64", help="the low and high connection counts (default 16,64)"
    )
    p.add_argument(
        "--fanout", default="1,4,16", help="group counts for the fan-out rows (default 1,4,16)"
    )
    p.add_argument(
        "--memory-count",
        type=int,
        help="notifications for the memory row (default 200000; quick 10000)",
    )
    p.add_argument("--memory-samples", type=int, help="RSS samples over them (default 10; quick 4)")
    p.add_argument(
        "--memory-max-seconds",
        type=float,
        help="time cap of the memory row (default 600; quick 30)",
    )
    p.add_argument(
        "--duplicates",
        type=int,
        help="acknowledged notifications re-sent by the duplicate row (default 20000; quick 1000)",
    )
    p.add_argument(
        "--corpus",
        type=int,
        help="signed requests to precompute (default 250000, quick 40000; at least memory + 5000)",
    )
    p.add_argument(
        "--postgres-dsn",
        default=os.environ.get(PG_DSN_ENV, DEFAULT_PG_DSN),
        help=f"PostgreSQL for its row; a fresh schema is created and dropped (env {PG_DSN_ENV})",
    )
    p.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)}",
    )
    p.add_argument("--skip", default="", help="comma-separated scenarios to leave out")
    p.add_argument(
        "--wrk-threads",
        type=int,
        default=1,
        help="wrk -t (default 1: the servers need the other core)",
    )
    p.add_argument(
        "--log-level", default="INFO", help="hub and bridge --log-level (default INFO, as deployed)"
    )
    p.add_argument(
        "--sub-max-in-flight", type=int, default=256, help="subscriber flow control (default 256)"
    )
    p.add_argument(
        "--sub-callback-threads",
        type=int,
        default=4,
        help="subscriber callback threads (default 4)",
    )
    p.add_argument(
        "--hub-arg", action="append", default=[], help="extra flag for `paynotify hub` (repeatable)"
    )
    p.add_argument(
        "--bridge-arg",
        action="append",
        default=[],
        help="extra flag for `paynotify bridge` (repeatable)",
    )
    p.add_argument(
        "--out", default="bench-results", help="where the JSON goes (default bench-results)"
    )
    p.add_argument(
        "--cache",
        default="bench-results/cache",
        help="signed-request cache (default bench-results/cache)",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        help="before each point, wait up to this many seconds for other processes to leave the "
        f"CPU (under {QUIET_CORES} cores); default 60, quick 3",
    )
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run every benchmark process under `nice -n N` (e.g. -5 on a machine others use)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure the pipeline and duplicate points N times, each with its bare point right "
        "after it; their verdicts use the median ratio (default 1)",
    )
    p.add_argument("--keep-logs", action="store_true", help="keep the processes' logs and stores")
    a = p.parse_args(argv)
    if a.repeat < 1:
        p.error("--repeat must be at least 1")
    q = a.quick
    memory_count = a.memory_count or (10_000 if q else 200_000)
    low, high = (int(x) for x in a.connections.split(","))
    wanted = [s for s in a.only.split(",") if s and s not in a.skip.split(",")]
    unknown = set(wanted) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    return Settings(
        duration=a.duration or (3.0 if q else 10.0),
        warmup=a.warmup if a.warmup is not None else (1.0 if q else 2.0),
        low=low,
        high=high,
        fanout=tuple(int(x) for x in a.fanout.split(",")),
        memory_count=memory_count,
        memory_samples=a.memory_samples or (4 if q else 10),
        memory_max_s=a.memory_max_seconds or (30.0 if q else 600.0),
        duplicates=a.duplicates or (1_000 if q else 20_000),
        corpus=max(a.corpus or (40_000 if q else 250_000), memory_count + 5_000),
        postgres_dsn=a.postgres_dsn,
        scenarios=tuple(wanted),
        wrk_threads=a.wrk_threads,
        out=Path(a.out),
        cache=Path(a.cache),
        keep_logs=a.keep_logs,
        quick=q,
        nice=a.nice,
        wait_quiet=a.wait_quiet if a.wait_quiet is not None else (3.0 if q else 60.0),
        repeat=a.repeat,
        options=PipelineOptions(
            log_level=a.log_level,
            sub_max_in_flight=a.sub_max_in_flight,
            sub_callback_threads=a.sub_callback_threads,
            hub_args=tuple(a.hub_arg),
            bridge_args=tuple(a.bridge_arg),
        ),
    )


@dataclass
class Run:
    """What every scenario needs: settings, the corpus, the process registry, the results."""

    settings: Settings
    corpus: Corpus
    procs: ProcessGroup
    results: Results
    workdir: Path
    # The bare app, kept running (idle between points) to measure again right after a point
    # compared with it: its own process group, so a scenario's stop_all leaves it running.
    bare_procs: ProcessGroup | None = None
    bare_url: str = ""

    def load(self, connections: int, start: int, count: int, **kw: Any) -> Load:
        s = self.settings
        duration = kw.pop("duration", s.duration)
        return Load(connections, duration, start, count, threads=s.wrk_threads, nice=s.nice, **kw)

    @contextlib.contextmanager
    def pipeline(self, label: str, store_url: str, groups: int) -> Iterator[Pipeline]:
        print(
            f"starting pipeline {label}: {groups} group(s), store {store_url.split('?')[0]}",
            flush=True,
        )
        p = Pipeline(label, store_url, groups, self.corpus, self.procs, self.settings.options)
        try:
            p.start()
            yield p
        finally:
            p.stop()

    def sqlite_url(self, label: str) -> str:
        return f"sqlite:///{self.workdir / label / 'hub.db'}"

    def warm(self, url: str, p: Pipeline | None, connections: int) -> None:
        if self.settings.warmup <= 0:
            return
        start, count = (p.cursor.position, self.slice_for(p)) if p else (0, self._bare_count())
        r = run_wrk(
            url, self.corpus, self.load(connections, start, count, duration=self.settings.warmup)
        )
        if p:
            p.cursor.take(r.consumed)

    def _bare_count(self) -> int:
        return min(self.corpus.count, BARE_SLICE)

    def slice_for(self, p: Pipeline, rate: float = 0.0) -> int:
        """Records for one point: the unused ones, capped by what the fastest point could use."""
        best = rate or max((q.ok_rps for q in self.results.points.values()), default=0.0)
        # Without a measured point yet, assume at most 10k/s (the bare limit here is ~7k/s).
        cap = int((best or 10_000) * self.settings.duration * 1.5) + 5_000
        return max(min(p.cursor.remaining, cap), 1)

    def wait_quiet(self, members: list[Proc]) -> float:
        """Wait up to --wait-quiet s for other processes to leave the CPU; the load they made."""
        deadline = time.monotonic() + self.settings.wait_quiet
        told = False
        while True:
            before = CpuSnapshot.take(members)
            time.sleep(1.0)
            spent = CpuSnapshot.take(members).since(before)
            other = max(0.0, spent.system - sum(spent.by_role.values()))
            if other < QUIET_CORES or time.monotonic() >= deadline:
                return other
            if not told:
                print(f"  waiting up to {self.settings.wait_quiet:.0f} s for the machine to "
                      f"quieten (other processes use {other:.2f} cores)", flush=True)  # fmt: skip
                told = True

    def point(
        self, p: Pipeline, name: str, label: str, kind: str, connections: int, **kw: Any
    ) -> Point:
        if p.cursor.remaining < LOW_CORPUS:
            self.results.note(
                f"{name}: only {p.cursor.remaining} unused records left; raise --corpus"
            )
        count = self.slice_for(p, kw.get("rate", 0.0))
        self.wait_quiet(p.members())
        load = self.load(connections, p.cursor.position, count, **kw)
        point = measure(name, label, kind, p.url, self.corpus, load, p.members(),
                        with_postgres=store_is_pg(p))  # fmt: skip
        p.cursor.take(point.wrk.consumed)
        point.extra.update(store=store_kind(p), groups=p.groups)
        return self._show(point)

    def paired_bare(self, point: Point) -> None:
        """Measure the bare limit again at `point`'s connections, just after it: the point's
        ratio is taken against this measurement, so drift of a shared machine between the first
        bare row and the point does not enter it."""
        if self.bare_procs is None or not self.bare_procs.procs:
            return
        c = point.wrk.connections
        proc = self.bare_procs.procs[0]
        name = f"bare@{c} after {point.name}"
        self.wait_quiet([proc])
        load = self.load(c, 0, self._bare_count())
        self._show(measure(name, "bare limit", "bare", self.bare_url, self.corpus, load, [proc]))
        self.results.pairs[point.name] = name

    def _show(self, point: Point) -> Point:
        w = point.wrk
        print(
            f"  {point.name:<14} {point.ok_rps:>9,.0f} SUCCESS/s  p50 {point.p50:6.1f} ms  "
            f"p99 {point.p99:7.1f} ms  errors {w.errors}  mean {point.extra['latency_mean_ms']} ms "
            f"(hub Publish {point.extra.get('publish_mean_ms', '-')} ms)  "
            f"cpu µs/req { {k: round(v) for k, v in point.cpu_us_per_request.items()} }",
            flush=True,
        )
        return self.results.add(point)


def store_is_pg(p: Pipeline) -> bool:
    return p.store_url.startswith("postgres")


def store_kind(p: Pipeline) -> str:
    return "postgresql" if store_is_pg(p) else "sqlite"


# ---- scenarios --------------------------------------------------------------------------------


def run_bare(run: Run) -> None:
    """The bare limit at both connection counts; the app stays up for the paired measurements."""
    s = run.settings
    run.bare_procs = ProcessGroup(run.workdir, nice=s.nice)
    proc, url, server_settings = bare_server(run.bare_procs)
    run.bare_url = url
    run.results.meta["bare_server"] = server_settings
    run.warm(url, None, s.low)
    for c in (s.low, s.high):
        load = run.load(c, 0, run._bare_count())
        run.wait_quiet([proc])
        point = measure(f"bare@{c}", "bare limit", "bare", url, run.corpus, load, [proc])
        run._show(point)


def run_main_pipeline(run: Run) -> None:
    """SQLite, one group: both connection counts, the paced point, the duplicate path."""
    s, want = run.settings, run.settings.scenarios
    with run.pipeline("sqlite-1", run.sqlite_url("sqlite-1"), 1) as p:
        dup_start = p.cursor.take(s.duplicates) if "duplicate" in want else 0
        run.warm(p.url, p, s.low)
        for c in (s.low, s.high):
            for i in range(s.repeat):
                name = repeat_name(f"pipeline@{c}", i)
                run.paired_bare(run.point(p, name, "pipeline", "pipeline", c))
        if "paced" in want:
            rate = statistics.median(q.ok_rps for q in run.results.repeats(f"pipeline@{s.low}")) / 2
            run.point(p, f"paced@{s.low}", "paced", "paced", s.low, rate=max(rate, 1.0))
        if "duplicate" in want:
            run_duplicates(run, p, dup_start)


def run_duplicates(run: Run, p: Pipeline, start: int) -> None:
    s = run.settings
    n = s.duplicates
    print(f"  publishing {n} notifications once, for the duplicate row", flush=True)
    prime = run_wrk(
        p.url, run.corpus, run.load(s.low, start, n, stop_after=n + s.low, duration=max(60, n / 50))
    )
    if prime.errors:
        run.results.note(
            f"duplicate row: {prime.errors} first sends were not SUCCESS ({prime.error_text()})"
        )
    load = run.load(s.low, start, n)
    # The same bodies sent again 2 minutes later and signed anew: each is verified, then answered
    # from the cache (whether Alipay's retries are re-signed is not documented).
    resigned = ensure_corpus(s.cache, start + n, resend=1)
    for name, corpus, resent in (
        (f"duplicate@{s.low}", run.corpus, "byte for byte"),
        (f"duplicate-resigned@{s.low}", resigned, "signed anew"),
    ):
        for i in range(s.repeat):
            run.wait_quiet(p.members())
            point = measure(
                repeat_name(name, i), "duplicates", "duplicate", p.url, corpus, load, p.members()
            )
            point.extra.update(store="sqlite", groups=1, distinct_notifications=n, resent=resent)
            run.paired_bare(run._show(point))
    # The same retries through a bridge without the acknowledged-body cache: what the hub costs.
    bridge, base = p.start_bridge_process(f"bridge-{p.label}-nocache", ("--ack-cache-size", "0"))
    try:
        members = [bridge, *(m for m in p.members() if m is not p.bridge)]
        run.wait_quiet(members)
        url = base + run.corpus.notify_path
        point = measure(
            f"duplicate-hub@{s.low}", "duplicates", "duplicate", url, run.corpus, load, members
        )
        point.extra.update(store="sqlite", groups=1, distinct_notifications=n, ack_cache=False)
        run._show(point)
    finally:
        run.procs.stop(bridge)


def run_fanout(run: Run) -> None:
    """Every group count measured here, one after the other (1 group too, rather than reusing
    the pipeline row from minutes before): the largest is compared with 1 group of this run."""
    s = run.settings
    for groups in sorted(set(s.fanout) | {1}):
        label = f"fanout-{groups}"
        with run.pipeline(label, run.sqlite_url(label), groups) as p:
            run.warm(p.url, p, s.low)
            run.point(p, f"fanout{groups}@{s.low}", "fan-out", "fanout", s.low)


def run_postgres(run: Run) -> None:
    s = run.settings
    schema = f"bench_{os.getpid()}_{int(time.time())}"
    try:
        ctx = postgres_schema(s.postgres_dsn, schema)
        url = ctx.__enter__()
    except Exception as exc:  # any driver error: PostgreSQL is not there
        run.results.note(
            f"PostgreSQL row skipped: cannot create a schema at {s.postgres_dsn}: {exc}"
        )
        return
    try:
        # The SQLite pipeline again just before, so the ratio compares neighbours in time.
        with run.pipeline("sqlite-before-postgres", run.sqlite_url("sqlite-before-pg"), 1) as p:
            run.warm(p.url, p, s.low)
            sqlite_point = run.point(
                p, f"pipeline@{s.low} before postgres", "pipeline", "pipeline", s.low
            )
        with run.pipeline("postgres-1", url, 1) as p:
            run.warm(p.url, p, s.low)
            point = run.point(p, f"postgres@{s.low}", "pipeline, PostgreSQL", "postgres", s.low)
        run.results.pairs[point.name] = sqlite_point.name
    finally:
        ctx.__exit__(None, None, None)


def run_memory(run: Run) -> None:
    s = run.settings
    run.results.memory_target = s.memory_count
    chunk = max(1, s.memory_count // s.memory_samples)
    with run.pipeline("memory", run.sqlite_url("memory"), 1) as p:
        run.warm(p.url, p, s.low)
        started, sent = time.monotonic(), 0
        print(
            f"  memory: {s.memory_count:,} notifications in {s.memory_samples} chunks", flush=True
        )
        while sent < s.memory_count:
            left = s.memory_max_s - (time.monotonic() - started)
            if left <= 1:
                run.results.note(f"memory row stopped by its time cap after {sent:,} notifications")
                break
            n = min(chunk, s.memory_count - sent)
            # A chunk ends at its count or at its share of the time cap, so a slow pipeline still
            # gets every sample (over fewer notifications, which the verdict then says).
            slot = min(left, s.memory_max_s / s.memory_samples)
            load = run.load(s.low, p.cursor.position, n + s.low, stop_after=n, duration=slot)
            r = run_wrk(p.url, run.corpus, load)
            p.cursor.take(r.consumed)
            sent += r.success
            sample = MemorySample(sent, time.monotonic() - started, _rss(p), r.ok_rps, r.errors)
            run.results.memory.append(sample)
            print(
                f"  {sent:>8,} sent: RSS KiB {sample.rss_kib} {r.ok_rps:,.0f}/s errors {r.errors}",
                flush=True,
            )


def _rss(p: Pipeline) -> dict[str, int]:
    out = {
        "hub": rss_kib(p.hub.pid) if p.hub else 0,
        "bridge": rss_kib(p.bridge.pid) if p.bridge else 0,
    }
    out["subscriber"] = max((rss_kib(s.pid) for s in p.subscribers), default=0)
    return out


# ---- driver -----------------------------------------------------------------------------------


def meta(settings: Settings, corpus: Corpus, workdir: Path) -> dict[str, Any]:
    return {
        "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "git": _git_revision(),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "wrk": shutil.which("wrk"),
        "load_average_at_start": os.getloadavg(),
        "settings": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()
        },
        "corpus": {
            "records": corpus.count,
            "file": str(corpus.path),
            "record_size": corpus.record_size,
        },
        "workdir": str(workdir),
    }


def _git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], capture_output=True, text=True, timeout=5
        )
    except OSError:
        return "unknown"
    return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def run_scenarios(run: Run) -> None:
    want = run.settings.scenarios
    steps = [
        ("bare", run_bare),
        ("pipeline", run_main_pipeline),
        ("fanout", run_fanout),
        ("postgres", run_postgres),
        ("memory", run_memory),
    ]
    for name, step in steps:
        if name not in want and not (name == "pipeline" and {"paced", "duplicate"} & set(want)):
            continue
        print(f"== {name}", flush=True)
        try:
            step(run)
        except (StartError, WrkError) as exc:
            run.results.note(f"{name} failed: {exc}")
        finally:
            run.procs.stop_all()


def save(results: Results, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = out / f"{stamp}.json"
    text = json.dumps(results.to_json(), indent=2, ensure_ascii=False)
    path.write_text(text)
    (out / "latest.json").write_text(text)
    return path


def _interrupt_on_sigterm() -> None:
    """SIGTERM (kill, a CI timeout) stops the run like Ctrl-C: every started process is stopped."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    _interrupt_on_sigterm()
    try:
        require_wrk()
    except WrkError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    corpus = ensure_corpus(settings.cache, settings.corpus)
    workdir = Path(tempfile.mkdtemp(prefix="paynotify-bench-"))
    results = Results(meta(settings, corpus, workdir))
    procs = ProcessGroup(workdir, nice=settings.nice)
    run = Run(settings, corpus, procs, results, workdir)
    try:
        run_scenarios(run)
    except KeyboardInterrupt:
        results.note("interrupted: the table holds what was measured before")
    finally:
        procs.stop_all()
        if run.bare_procs is not None:
            run.bare_procs.stop_all()
        if not settings.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
    results.meta["finished"] = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    print()
    print(render(results))
    path = save(results, settings.out)
    print(f"saved {path} and {settings.out / 'latest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
