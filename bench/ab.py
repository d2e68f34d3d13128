"""`python -m bench.ab A B`: two checkouts' pipelines side by side, loaded in turn, compared.

    python -m bench.ab ../base . --groups 16 --rounds 8 --seconds 4
    python -m bench.ab ../base . --rate 400            # paced, for latency

A single `make bench` run moves more between runs on a shared machine than most changes do. This
compares like with like: both pipelines (hub, one subscriber per group, bridge; each on its own
fresh store) run at once, idle in turn while the other is loaded by wrk, the order alternating each
round (A B, B A, ...). It prints each load, then the medians of each side (throughput, p50/p99
latency, CPU per request of each role) and in how many rounds B was ahead, and saves the numbers in
bench-results/ab-<time>.json.

A and B are checkouts of this repository (a `git worktree` of the commit to compare with), each
with its own virtualenv (`make venv` in it: a copied one points at the wrong tree). Each side's
processes run that checkout's code; the benchmark's own code (this `bench` package) is the one
running this command, so an older commit without `bench/ab.py` can still be side A.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.bodies import Corpus, ensure_corpus
from bench.pipeline import Pipeline, PipelineOptions, postgres_schema
from bench.procs import ProcessGroup, cpu_seconds
from bench.run import DEFAULT_PG_DSN, PG_DSN_ENV
from bench.wrk import Load, WrkError, require_wrk, run_wrk

__all__ = ["Round", "Side", "hold_command", "main", "read_ready", "summarize"]

ROOT = Path(__file__).resolve().parent.parent
READY = "READY "
START_TIMEOUT_S = 180.0
FIRST_SLICE = 10_000  # records for the first load; later ones follow what was used
STOP_TIMEOUT_S = 30.0


@dataclass
class Round:
    """One load of one side."""

    side: str
    ok_rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    wraps: int
    cpu_us_per_request: dict[str, float]


@dataclass
class Side:
    """One checkout's pipeline, held by a `--hold` process running with that checkout's venv."""

    name: str
    tree: Path
    process: subprocess.Popen[str]
    url: str = ""
    cursor: int = 0
    pids: dict[str, list[int]] = field(default_factory=dict)

    def cpu(self) -> dict[str, float]:
        return {role: sum(map(cpu_seconds, pids)) for role, pids in self.pids.items()}


def summarize(rounds: Sequence[Round]) -> dict[str, Any]:
    """Medians of each side, and in how many rounds (the n-th load of each side) B was ahead."""
    out: dict[str, Any] = {}
    for name in ("A", "B"):
        mine = [r for r in rounds if r.side == name]
        if not mine:
            continue
        roles = sorted({role for r in mine for role in r.cpu_us_per_request})
        out[name] = {
            "ok_rps": statistics.median(r.ok_rps for r in mine),
            "p50_ms": statistics.median(r.p50_ms for r in mine),
            "p99_ms": statistics.median(r.p99_ms for r in mine),
            "cpu_us_per_request": {
                role: statistics.median(r.cpu_us_per_request.get(role, 0.0) for r in mine)
                for role in roles
            },
        }
    pairs = list(
        zip(
            [r for r in rounds if r.side == "A"], [r for r in rounds if r.side == "B"], strict=False
        )
    )
    out["b_ahead"] = sum(1 for a, b in pairs if b.ok_rps > a.ok_rps)
    out["pairs"] = len(pairs)
    return out


def _format(r: Round) -> str:
    cpu = " ".join(f"{role} {us:,.0f}" for role, us in sorted(r.cpu_us_per_request.items()))
    warn = f"  ({r.wraps} repeated records: raise --corpus)" if r.wraps else ""
    return (
        f"  {r.side}  {r.ok_rps:9,.1f} req/s  p50 {r.p50_ms:7.2f}  p99 {r.p99_ms:8.2f} ms  "
        f"errors {r.errors}  CPU µs/req {cpu}{warn}"
    )


def _print_summary(summary: dict[str, Any]) -> None:
    for name in ("A", "B"):
        s = summary.get(name)
        if s is None:
            continue
        cpu = " ".join(f"{role} {us:,.0f}" for role, us in s["cpu_us_per_request"].items())
        print(
            f"median {name}  {s['ok_rps']:9,.1f} req/s  p50 {s['p50_ms']:7.2f}  "
            f"p99 {s['p99_ms']:8.2f} ms  CPU µs/req {cpu}"
        )
    print(f"B ahead in {summary['b_ahead']} of {summary['pairs']} rounds")


# -- the hold process (runs with a side's venv) -------------------------------------------------


def _hold(args: argparse.Namespace) -> int:
    """Start one pipeline from the checkout whose venv runs this; READY json; stop on EOF."""
    corpus = Corpus(
        Path(args.corpus_path),
        args.corpus_count,
        Path(args.public_key),
        Path(args.private_key),
    )
    work = Path(tempfile.mkdtemp(prefix=f"paynotify-ab-{args.label}-"))
    procs = ProcessGroup(work)
    try:
        _hold_pipeline(args, corpus, work, procs)
    except BaseException:
        print(f"bench.ab: side {args.label} failed; its logs are in {work}", file=sys.stderr)
        raise
    shutil.rmtree(work, ignore_errors=True)  # its store and logs: nothing failed
    return 0


def _hold_pipeline(
    args: argparse.Namespace, corpus: Corpus, work: Path, procs: ProcessGroup
) -> None:
    with contextlib.ExitStack() as stack:
        store_url = f"sqlite:///{work / 'hub.db'}"
        if args.store == "postgres":
            schema = f"ab_{args.label.lower()}_{os.getpid()}"
            store_url = stack.enter_context(postgres_schema(args.postgres_dsn, schema))
        stack.callback(procs.stop_all)
        options = PipelineOptions(hub_args=tuple(args.hub_arg))
        pipeline = Pipeline(args.label, store_url, args.groups, corpus, procs, options)
        pipeline.start()
        pids: dict[str, list[int]] = {}
        for proc in pipeline.members():
            pids.setdefault(proc.role, []).append(proc.pid)
        ready = {"url": pipeline.url, "cursor": pipeline.cursor.position, "pids": pids}
        print(READY + json.dumps(ready), flush=True)
        sys.stdin.read()  # until the comparing process closes it (or dies)


# -- the comparing process ----------------------------------------------------------------------


def hold_command(python: str, label: str, groups: int, corpus: Corpus) -> list[str]:
    """The command that holds one side's pipeline (run from this checkout's root)."""
    return [
        *(python, "-m", "bench.ab", "--hold", "--label", label, "--groups", str(groups)),
        *("--corpus-path", str(corpus.path), "--corpus-count", str(corpus.count)),
        *("--public-key", str(corpus.public_key_pem)),
        *("--private-key", str(corpus.private_key_pem)),
    ]


def _start_side(name: str, tree: Path, args: argparse.Namespace, corpus: Corpus) -> Side:
    python = tree / ".venv" / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{tree} has no virtualenv: run `make venv` there first")
    cmd = hold_command(str(python), name, args.groups, corpus)
    cmd += ["--store", args.store, "--postgres-dsn", args.postgres_dsn]
    for extra in args.hub_arg:
        cmd += ["--hub-arg", extra]
    # This checkout's `bench` (`-m` puts the working directory first on the path), the side's
    # project packages (its venv's editable installs point into its tree).
    process = subprocess.Popen(
        cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    return Side(name, tree, process)


def _wait_ready(side: Side) -> None:
    ready = read_ready(side.process, START_TIMEOUT_S)
    if ready is None:
        raise SystemExit(
            f"side {side.name} ({side.tree}) was not ready within {START_TIMEOUT_S:.0f} s "
            f"(exit code {side.process.poll()})"
        )
    side.url, side.cursor, side.pids = ready["url"], ready["cursor"], ready["pids"]


def read_ready(process: subprocess.Popen[str], timeout: float) -> dict[str, Any] | None:
    """The READY line's JSON of a hold process; None if it ends first. Killed when it takes
    longer than `timeout` seconds (its output then ends)."""
    assert process.stdout is not None
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    try:
        for line in process.stdout:
            if line.startswith(READY):
                data: dict[str, Any] = json.loads(line[len(READY) :])
                return data
    finally:
        timer.cancel()
    return None


def _stop(sides: Sequence[Side]) -> None:
    for side in sides:
        if side.process.stdin is not None:
            with contextlib.suppress(OSError):
                side.process.stdin.close()
    for side in sides:
        try:
            side.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            side.process.kill()
            side.process.wait()


@contextlib.contextmanager
def _sides(args: argparse.Namespace, corpus: Corpus) -> Iterator[list[Side]]:
    sides: list[Side] = []
    try:
        for name, tree in (("A", args.a), ("B", args.b)):
            sides.append(_start_side(name, Path(tree).resolve(), args, corpus))
        for side in sides:
            _wait_ready(side)
        yield sides
    finally:
        _stop(sides)


def _load(side: Side, args: argparse.Namespace, corpus: Corpus, count: int) -> Round:
    before = side.cpu()
    load = Load(args.connections, args.seconds, side.cursor, count, rate=args.rate)
    result = run_wrk(side.url, corpus, load)
    after = side.cpu()
    side.cursor += result.consumed
    requests = max(result.requests, 1)
    cpu = {role: (after[role] - before[role]) / requests * 1e6 for role in after}
    cpu["wrk"] = result.cpu_s / requests * 1e6
    return Round(
        side.name,
        result.ok_rps,
        result.latency_ms.get("p50", 0.0),
        result.latency_ms.get("p99", 0.0),
        result.errors,
        result.wraps,
        cpu,
    )


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.splitlines()[0])
    p.add_argument("a", nargs="?", help="checkout A (the base)")
    p.add_argument("b", nargs="?", help="checkout B (the change)")
    p.add_argument("--groups", type=int, default=1, help="groups, one subscriber each (1)")
    p.add_argument("--rounds", type=int, default=6, help="loads of each side (6)")
    p.add_argument("--seconds", type=float, default=5.0, help="seconds per load (5)")
    p.add_argument("--connections", type=int, default=16, help="wrk connections (16)")
    p.add_argument("--rate", type=float, default=0.0, help="paced: requests/s (0: full speed)")
    p.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument(
        "--postgres-dsn",
        default=os.environ.get(PG_DSN_ENV, DEFAULT_PG_DSN),
        help=f"a fresh schema per side (env {PG_DSN_ENV})",
    )
    p.add_argument("--hub-arg", action="append", default=[], help="extra `paynotify hub` flag")
    p.add_argument("--corpus", type=int, default=60_000, help="signed requests to have (60000)")
    p.add_argument("--cache", default=str(ROOT / "bench-results" / "cache"))
    p.add_argument("--out", default=str(ROOT / "bench-results"))
    # The hold process's own flags (set by the comparing process).
    p.add_argument("--hold", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--label", default="A", help=argparse.SUPPRESS)
    p.add_argument("--corpus-path", help=argparse.SUPPRESS)
    p.add_argument("--corpus-count", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--public-key", help=argparse.SUPPRESS)
    p.add_argument("--private-key", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not args.hold and (args.a is None or args.b is None):
        p.error("give two checkouts: A (the base) and B (the change)")
    if args.rounds < 1 or args.seconds <= 0 or args.groups < 1:
        p.error("--rounds and --groups must be at least 1, --seconds positive")
    return args


def _compare(args: argparse.Namespace, corpus: Corpus) -> list[Round]:
    """Start both sides, load them in turn for every round, stop them."""
    rounds: list[Round] = []
    with _sides(args, corpus) as sides:
        start = max(side.cursor for side in sides) + 1
        # wrk reads its slice of records at start (CPU counted as wrk's): a slice as large as
        # the most a load has used yet, with room, not a whole share of the corpus.
        share = max((corpus.count - start) // args.rounds, 1)
        per_load = min(share, FIRST_SLICE)
        for side in sides:
            side.cursor = start
        print(
            f"A {sides[0].tree}  B {sides[1].tree}: {args.groups} group(s), {args.store}, "
            f"{args.connections} connections"
            + (f", paced at {args.rate:g}/s" if args.rate else ", full speed"),
            flush=True,
        )
        for n in range(args.rounds):
            for side in sides if n % 2 == 0 else sides[::-1]:
                rounds.append(_load(side, args, corpus, per_load))
                print(_format(rounds[-1]), flush=True)
                used = rounds[-1].ok_rps * args.seconds
                per_load = min(share, max(per_load, int(used * 1.5) + 1000))
    return rounds


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.hold:
        return _hold(args)
    try:
        require_wrk()
    except WrkError as exc:
        print(f"bench.ab: {exc}", file=sys.stderr)
        return 2
    corpus = ensure_corpus(Path(args.cache), args.corpus)
    try:
        rounds = _compare(args, corpus)
    except WrkError as exc:  # both sides are stopped by now
        print(f"bench.ab: {exc}", file=sys.stderr)
        return 1
    summary = summarize(rounds)
    _print_summary(summary)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"ab-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    settings = {k: v for k, v in vars(args).items() if k not in {"hold", "label"}}
    settings.update(a=str(Path(args.a).resolve()), b=str(Path(args.b).resolve()))
    record = {"settings": settings, "rounds": [asdict(r) for r in rounds], "summary": summary}
    path.write_text(json.dumps(record, indent=2))
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
