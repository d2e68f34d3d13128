"""Where the pipeline's time goes: py-spy on the bridge, the hub and a subscriber under wrk load.

    python -m bench.profile [--duration 15] [--connections 16] [--groups 1] [--store sqlite]

Needs py-spy (`.venv/bin/pip install py-spy`; not a project dependency). Writes the raw collapsed
stacks (flamegraph.pl input) to bench-results/profile-<timestamp>/ and prints, per process, the CPU
microseconds per request and the functions with the most samples (self and inclusive).
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.bodies import Corpus, ensure_corpus
from bench.hubwrap import MARKER
from bench.measure import postgres_cpu
from bench.pipeline import Pipeline, PipelineOptions, postgres_schema
from bench.procs import CpuSnapshot, Proc, ProcessGroup, ask_by_signal
from bench.wrk import Load, WrkResult, require_wrk, run_wrk

__all__ = ["main", "summarize"]

FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
CORPUS = 100_000


def _short(frame: str) -> str:
    """`func (/long/path/pkg/mod.py:123)` -> `func (pkg/mod.py)`: functions, not lines."""
    match = FRAME.match(frame)
    if not match:
        return frame
    parts = Path(match["file"]).parts
    return f"{match['name']} ({'/'.join(parts[-2:])})"


def summarize(raw: Path, top: int, native: bool = False) -> str:
    """Self and inclusive sample shares per function, and per thread, from py-spy's raw output."""
    if not raw.exists():
        log = raw.with_suffix(".log")
        return f"  py-spy wrote nothing: {log.read_text().strip() if log.exists() else '?'}\n"
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        if frames[0].startswith(("thread (", "process ")):
            threads[re.sub(r"\d+", "N", frames[0])] += count
            frames = frames[1:]
        if not frames:
            continue
        names = [_short(f) for f in frames]
        own[names[-1]] += count
        kinds[_kind(frames)] += count
        for name in set(names):
            inclusive[name] += count
    if not total:
        return "  (no samples)\n"
    lines = [f"  {total} samples"]
    lines += ["  by thread:"] + [f"    {n / total:6.1%}  {t}" for t, n in threads.most_common(8)]
    if native:
        lines += ["  leaf frame is in (with --native):"]
        lines += [f"    {n / total:6.1%}  {k}" for k, n in kinds.most_common()]
    lines += ["  self:"] + [f"    {n / total:6.1%}  {f}" for f, n in own.most_common(top)]
    lines += ["  inclusive:"] + [
        f"    {n / total:6.1%}  {f}" for f, n in inclusive.most_common(top)
    ]
    return "\n".join(lines) + "\n"


def _kind(frames: list[str]) -> str:
    """What the innermost frame runs: gRPC core, CPython, libc/kernel, SQLite, Python code."""
    leaf = frames[-1]
    if re.search(r"\.py(:\d+)?\)$", leaf) or "(<string>" in leaf or "(<frozen" in leaf:
        return "Python code"
    if "grpc" in leaf or ".cc:" in leaf or "absl" in leaf:
        return "gRPC core (C++)"
    if "sqlite" in leaf.lower():
        return "SQLite (C)"
    if "libc.so" in leaf or "[vdso]" in leaf or "libpthread" in leaf:
        return "libc / system calls"
    if re.search(r"\.(c|h)(:\d+)?\)$", leaf) or "python3" in leaf or "libpython" in leaf:
        return "CPython interpreter"
    return "other native: " + leaf.rsplit("(", 1)[-1].rstrip(")")


def _py_spy() -> str:
    path = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(path).exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    return path


def _record(proc: Proc, out: Path, a: argparse.Namespace) -> subprocess.Popen[bytes]:
    cmd = [_py_spy(), "record", "--pid", str(proc.pid), "--duration", str(round(a.duration))]
    cmd += ["--rate", str(a.rate), "--threads", "--format", "raw", "-o", str(out)]
    # --native needs to pause the process while it unwinds C stacks; Python-only sampling does not
    cmd.append("--native" if a.native else "--nonblocking")
    if a.gil:
        cmd.append("--gil")
    with open(out.with_suffix(".log"), "wb") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--duration", type=float, default=15.0, help="seconds sampled (default 15)")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--groups", type=int, default=1)
    p.add_argument("--store", default="sqlite", help="sqlite, or a postgresql:// DSN")
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second (default 200)")
    p.add_argument("--native", action="store_true", help="include C frames (gRPC core, sqlite)")
    p.add_argument(
        "--gil",
        action="store_true",
        help="sample only the thread holding the GIL: Python CPU, without threads blocked in C",
    )
    p.add_argument(
        "--count-store",
        action="store_true",
        help="run the hub under bench.hubwrap: store calls and their time per request",
    )
    p.add_argument(
        "--hub-switch-interval",
        type=float,
        help="experiment: run the hub with sys.setswitchinterval(S) (implies --count-store)",
    )
    p.add_argument(
        "--strace",
        action="store_true",
        help="count the hub's fsync, write, sendmsg... calls (strace -c; slows the hub down)",
    )
    p.add_argument(
        "--duplicates",
        type=int,
        default=0,
        help="profile the duplicate path: N notifications acknowledged once, then re-sent",
    )
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--out", default="bench-results")
    p.add_argument("--cache", default="bench-results/cache")
    a = p.parse_args(argv)
    require_wrk()
    _py_spy()
    corpus = ensure_corpus(Path(a.cache), CORPUS)
    out = Path(a.out) / f"profile-{dt.datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True)
    workdir = Path(tempfile.mkdtemp(prefix="paynotify-profile-"))
    procs = ProcessGroup(workdir)
    try:
        if a.store == "sqlite":
            _profile(a, corpus, procs, f"sqlite:///{workdir / 'hub.db'}", out)
        else:
            with postgres_schema(a.store, f"bench_profile_{int(time.time())}") as url:
                _profile(a, corpus, procs, url, out)
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"raw stacks in {out}")
    return 0


def _profile(
    a: argparse.Namespace, corpus: Corpus, procs: ProcessGroup, url: str, out: Path
) -> None:
    options = PipelineOptions(a.log_level)
    a.count_store = a.count_store or a.hub_switch_interval
    if a.count_store:
        command: tuple[str, ...] = (sys.executable, "-m", "bench.hubwrap")
        if a.hub_switch_interval:
            command += ("--switch-interval", str(a.hub_switch_interval))
        options = replace(options, hub_command=command)
    pipeline = Pipeline("profile", url, a.groups, corpus, procs, options)
    pipeline.start()
    warm = run_wrk(pipeline.url, corpus, Load(a.connections, 2, pipeline.cursor.position, 20_000))
    pipeline.cursor.take(warm.consumed)
    result: list[WrkResult] = []
    if a.duplicates:  # the duplicate path: acknowledge these once, then loop over them
        start = pipeline.cursor.take(a.duplicates)
        run_wrk(pipeline.url, corpus, Load(a.connections, 120, start, a.duplicates, a.duplicates))
        load = Load(a.connections, a.duration + 2, start, a.duplicates)
    else:
        count = min(pipeline.cursor.remaining, 60_000)
        load = Load(a.connections, a.duration + 2, pipeline.cursor.position, count)
    members = pipeline.members()
    counts_before = _store_counts(pipeline) if a.count_store else {}
    before, pg_before = CpuSnapshot.take(members), postgres_cpu()
    loader = threading.Thread(target=lambda: result.append(run_wrk(pipeline.url, corpus, load)))
    loader.start()
    time.sleep(1.0)
    targets = [pipeline.bridge, pipeline.hub, *pipeline.subscribers[:1]]
    if a.strace:
        assert pipeline.hub is not None
        spies = {"hub": (_strace(pipeline.hub, out / "hub-strace.txt", a.duration), pipeline.hub)}
    else:
        spies = {
            proc.role: (_record(proc, out / f"{proc.role}.txt", a), proc)
            for proc in targets
            if proc is not None
        }
    for spy, _ in spies.values():
        spy.wait()
    loader.join()
    counts_after = _store_counts(pipeline) if a.count_store else {}
    spent = CpuSnapshot.take(members).since(before)
    pg = sum(v - pg_before.get(pid, 0.0) for pid, v in postgres_cpu().items())
    r = result[0]
    print(f"\nload: {r.ok_rps:,.0f} SUCCESS/s, p50 {r.latency_ms['p50']:.1f} ms, errors {r.errors}")
    per = {role: s / max(1, r.requests) * 1e6 for role, s in spent.by_role.items()}
    if not url.startswith("sqlite"):
        per["postgres"] = pg / max(1, r.requests) * 1e6
    print("CPU µs per request: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(per.items())))
    if a.count_store:
        _print_store_counts(counts_before, counts_after, r.requests)
    if a.strace:
        about = r.rps * a.duration
        print(f"\n== hub syscalls over {a.duration:g} s (strace -c; about {about:,.0f} requests)")
        print((out / "hub-strace.txt").read_text())
        return
    for role in spies:
        print(f"\n== {role}")
        print(summarize(out / f"{role}.txt", a.top, a.native), end="")


def _strace(proc: Proc, out: Path, duration: float) -> subprocess.Popen[bytes]:
    cmd = ["timeout", "-s", "INT", str(round(duration)), "strace", "-f", "-c", "-o", str(out)]
    cmd += ["-e", "trace=fsync,fdatasync,write,writev,sendmsg,recvmsg,read,pwrite64,futex"]
    return subprocess.Popen([*cmd, "-p", str(proc.pid)], stdout=subprocess.DEVNULL)


def _store_counts(pipeline: Pipeline) -> dict[str, Any]:
    """Ask the counting hub for its counters (SIGUSR1)."""
    assert pipeline.hub is not None
    return ask_by_signal(pipeline.hub, MARKER)


def _print_store_counts(before: dict[str, Any], after: dict[str, Any], requests: int) -> None:
    print(f"\nstore calls per request ({requests} requests):")
    for verb, n in sorted(after["calls"].items(), key=lambda kv: -kv[1]):
        calls = n - before["calls"].get(verb, 0)
        spent = after["seconds"].get(verb, 0.0) - before["seconds"].get(verb, 0.0)
        if calls and verb == "(sqlite batched verbs)":
            print(f"  {verb:<22} {calls / requests:6.2f} per request")
        elif calls and verb == "(sqlite batches)":
            print(
                f"  {verb:<22} {calls / requests:6.2f} per request, "
                f"{spent / calls * 1e3:7.2f} ms each on the worker thread (wall)"
            )
        elif calls:
            print(
                f"  {verb:<22} {calls / requests:6.2f} calls/request, "
                f"{spent / calls * 1e3:7.2f} ms each (awaited, queueing included)"
            )


if __name__ == "__main__":
    sys.exit(main())
