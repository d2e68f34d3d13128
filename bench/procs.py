"""Start, watch and stop the processes under test; read their CPU time and resident memory."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CpuSnapshot",
    "Proc",
    "ProcessGroup",
    "ask_by_signal",
    "cpu_seconds",
    "free_port",
    "http_status",
    "rss_kib",
    "system_busy_s",
    "wait_for",
]

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STOP_GRACE_S = 5.0


class StartError(RuntimeError):
    """A process did not come up; the message carries the tail of its log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    """One started process, in its own process group, logging to `log`."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    role: str

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 12) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def cpu_s(self) -> float:
        """user + system CPU seconds of the process and its threads (0 once it is gone)."""
        return cpu_seconds(self.pid)


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of process `pid` and its threads (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # after the ")": state is field 3, utime field 14, stime field 15 (1-based, proc(5))
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class ProcessGroup:
    """Every process this benchmark started; `stop_all` ends each one's process group."""

    log_dir: Path
    # `nice -n` for every process started (negative: ahead of other work on a shared machine)
    nice: int = 0
    procs: list[Proc] = field(default_factory=list)

    def start(
        self, name: str, cmd: Sequence[str], role: str, env: dict[str, str] | None = None
    ) -> Proc:
        log = self.log_dir / f"{name}.log"
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                niced(list(cmd), self.nice),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        proc = Proc(name, popen, log, role)
        self.procs.append(proc)
        return proc

    def by_role(self, role: str) -> list[Proc]:
        return [p for p in self.procs if p.role == role and p.alive()]

    def stop(self, proc: Proc) -> None:
        _stop_group(proc.popen)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        # Subscribers and the bridge first, so the hub sees its clients leave rather than vanish.
        order = {"bridge": 0, "subscriber": 1, "hub": 2}
        for proc in sorted(self.procs, key=lambda p: order.get(p.role, 0)):
            _stop_group(proc.popen)
        self.procs.clear()

    def check_alive(self) -> None:
        for proc in self.procs:
            if not proc.alive():
                raise StartError(
                    f"{proc.name} exited with {proc.popen.returncode}; its log ends:\n"
                    f"{proc.log_tail()}"
                )


def niced(cmd: list[str], nice: int) -> list[str]:
    return ["nice", "-n", str(nice), *cmd] if nice else cmd


def _stop_group(popen: subprocess.Popen[bytes]) -> None:
    if popen.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(popen.pid, signal.SIGTERM)
    try:
        popen.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(STOP_GRACE_S)


def wait_for(what: str, check: Callable[[], bool], timeout_s: float, group: ProcessGroup) -> None:
    """Poll `check()` until true; fail early if a started process died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        group.check_alive()
        if check():
            return
        time.sleep(0.1)
    raise StartError(f"{what} not ready after {timeout_s:.0f} s")


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def http_status(port: int, path: str, timeout_s: float = 2.0) -> int:
    """Status of GET `path` on 127.0.0.1:`port`, 0 when the connection fails."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return 0
    finally:
        conn.close()


def rss_kib(pid: int) -> int:
    """VmRSS of `pid` in KiB (0 when the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def system_busy_s() -> float:
    """CPU seconds all cores spent not idle since boot (to spot load from outside the benchmark)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    # user, nice, system and steal; not interrupts, which loopback traffic itself causes
    return (values[0] + values[1] + values[2] + values[7]) / CLOCK_TICKS


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds per role (summed over that role's processes) and for the whole machine."""

    by_role: dict[str, float]
    system: float

    @classmethod
    def take(cls, procs: Iterable[Proc]) -> CpuSnapshot:
        by_role: dict[str, float] = {}
        for proc in procs:
            by_role[proc.role] = by_role.get(proc.role, 0.0) + proc.cpu_s()
        return cls(by_role, system_busy_s())

    def since(self, before: CpuSnapshot) -> CpuSnapshot:
        roles = set(self.by_role) | set(before.by_role)
        return CpuSnapshot(
            {r: self.by_role.get(r, 0.0) - before.by_role.get(r, 0.0) for r in roles},
            self.system - before.system,
        )


def ask_by_signal(proc: Proc, marker: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """Send `proc` SIGUSR1 and read the JSON of the next line in its log starting with `marker`
    (bench.hubwrap answers so)."""
    seen = proc.log.read_text(errors="replace").count(marker)
    os.kill(proc.pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = proc.log.read_text(errors="replace")
        lines = [x for x in text.splitlines() if x.startswith(marker)]
        if len(lines) > seen:
            data: dict[str, Any] = json.loads(lines[-1][len(marker) :])
            return data
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} did not answer SIGUSR1 with a {marker.strip()} line")
