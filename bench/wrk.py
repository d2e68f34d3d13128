"""Run wrk with bench/wrk_post.lua and turn its "WRKJSON" line into a `WrkResult`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.bodies import Corpus
from bench.procs import niced

__all__ = ["INSTALL_HINT", "Load", "WrkError", "WrkResult", "require_wrk", "run_wrk"]

SCRIPT = Path(__file__).with_name("wrk_post.lua")
INSTALL_HINT = "apt-get update && apt-get install -y wrk"
MARKER = "WRKJSON "


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed no result."""


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkError(f"wrk is not installed; install it with:  {INSTALL_HINT}")
    return path


@dataclass(frozen=True)
class Load:
    """One wrk run: `count` records from `start`, for `duration` or until `stop_after` answers."""

    connections: int
    duration: float
    start: int
    count: int
    stop_after: int = 0
    rate: float = 0.0
    threads: int = 1
    timeout_s: float = 10.0
    nice: int = 0


@dataclass
class WrkResult:
    connections: int
    duration_s: float
    requests: int
    success: int
    non_success_200: int
    statuses: dict[str, int]
    socket_errors: dict[str, int]
    latency_ms: dict[str, float]
    wraps: int
    late: int
    max_lag_ms: float
    consumed: int
    cpu_s: float
    rate_target: float = 0.0
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def ok_rps(self) -> float:
        """Requests answered 200 with the exact SUCCESS JSON, per second."""
        return self.success / self.duration_s if self.duration_s else 0.0

    @property
    def errors(self) -> int:
        """Everything that was not SUCCESS: other statuses, other 200 bodies, socket errors."""
        return (self.requests - self.success) + sum(self.socket_errors.values())

    def error_text(self) -> str:
        parts = [f"HTTP {code}: {n}" for code, n in sorted(self.statuses.items())]
        if self.non_success_200:
            parts.append(f"200 without SUCCESS: {self.non_success_200}")
        parts += [f"{kind}: {n}" for kind, n in sorted(self.socket_errors.items()) if n]
        return ", ".join(parts)


def run_wrk(url: str, corpus: Corpus, load: Load) -> WrkResult:
    """Run one load against `url` and return what wrk measured (raises `WrkError` if it failed)."""
    wrk = require_wrk()
    env = dict(os.environ)
    env.update(
        BENCH_CORPUS=str(corpus.path),
        BENCH_RECORD_SIZE=str(corpus.record_size),
        BENCH_START=str(load.start),
        BENCH_COUNT=str(load.count),
        BENCH_THREADS=str(load.threads),
        BENCH_STOP_AFTER=str(load.stop_after),
        BENCH_RATE=f"{load.rate:.3f}",
    )
    cmd = [
        wrk,
        f"-t{load.threads}",
        f"-c{load.connections}",
        f"-d{max(1, round(load.duration))}s",
        f"--timeout={max(1, round(load.timeout_s))}s",
        "--latency",
        "-s",
        str(SCRIPT),
        url,
    ]
    cmd = niced(cmd, load.nice)
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    data = _parse(text, cmd, proc.returncode)
    return _result(data, load, usage.ru_utime + usage.ru_stime)


def _parse(text: str, cmd: list[str], returncode: int) -> dict[str, Any]:
    for line in text.splitlines():
        if line.startswith(MARKER):
            parsed: dict[str, Any] = json.loads(line[len(MARKER) :])
            return parsed
    raise WrkError(f"wrk exited {returncode} without a result: {' '.join(cmd)}\n{text[-2000:]}")


def _result(data: dict[str, Any], load: Load, cpu_s: float) -> WrkResult:
    threads = data.get("threads") or []
    if isinstance(threads, dict):
        threads = list(threads.values())
    statuses: dict[str, int] = {}
    for t in threads:
        for code, n in (t.get("statuses") or {}).items():
            statuses[code] = statuses.get(code, 0) + int(n)
    latency = data["latency_us"]
    percentiles = {f"p{k}": float(v) / 1000 for k, v in latency["percentiles"].items()}
    max_sent = max((int(t["sent"]) for t in threads), default=0)
    return WrkResult(
        connections=load.connections,
        duration_s=float(data["duration_us"]) / 1e6,
        requests=int(data["requests"]),
        success=sum(int(t["success"]) for t in threads),
        non_success_200=sum(int(t["non_success_200"]) for t in threads),
        statuses=statuses,
        socket_errors={k: int(v) for k, v in data["errors"].items() if k != "status"},
        latency_ms={**percentiles, "max": float(latency["max"]) / 1000},
        wraps=sum(int(t["wraps"]) for t in threads),
        late=sum(int(t["late"]) for t in threads),
        max_lag_ms=max((float(t["max_lag_ms"]) for t in threads), default=0.0),
        consumed=min(load.count, max_sent * load.threads),
        cpu_s=cpu_s,
        rate_target=load.rate,
        raw=data,
    )
