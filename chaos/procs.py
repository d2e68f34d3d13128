"""Child processes in their own process groups, killed for sure however the run ends.

    procs = ProcessSet()                     # atexit kills whatever is still running
    hub = procs.add(ManagedProcess("hub1", argv, log_dir, env, ready=HUB_READY))
    hub.start()                              # waits (bounded) for its ready line on stdout
    hub.kill()                               # SIGKILL to the whole group, like `kill -9`
    hub.terminate()                          # SIGTERM, then SIGKILL after a grace period
    procs.kill_all()

Every start writes `NAME-N.out` / `NAME-N.err` in the log folder (N counts the starts), so the
output of a run that was killed stays next to the one that replaced it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ManagedProcess", "ProcessSet", "StartError", "child_env"]

START_TIMEOUT = 30.0
TERMINATE_GRACE = 15.0
_POLL = 0.02


class StartError(RuntimeError):
    """A process exited or stayed silent instead of printing its ready line."""


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without PAYNOTIFY_* (the CLI reads its flags from there), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYNOTIFY_")}
    env.update(extra or {})
    return env


@dataclass
class ManagedProcess:
    """One restartable child; `ready` is a regex its stdout prints once it serves."""

    name: str
    argv: list[str]
    log_dir: Path
    env: dict[str, str]
    ready: re.Pattern[str]
    cwd: Path | None = None
    starts: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    # Set once its ProcessSet is closed: a late restart (a fault in progress) must not leak.
    closed: threading.Event = field(default_factory=threading.Event, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def stdout_path(self) -> Path:
        return self.log_dir / f"{self.name}-{self.starts}.out"

    @property
    def stderr_path(self) -> Path:
        return self.log_dir / f"{self.name}-{self.starts}.err"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start it (in a new session, so it leads its own process group) and wait until ready."""
        with self._lock:
            if self.closed.is_set():
                raise StartError(f"{self.name}: not started, the run is over")
            if self.alive():
                raise RuntimeError(f"{self.name} is already running")
            self.starts += 1
            with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
                self.process = subprocess.Popen(
                    self.argv,
                    stdout=out,
                    stderr=err,
                    stdin=subprocess.DEVNULL,
                    env=self.env,
                    cwd=self.cwd,
                    start_new_session=True,
                )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready.search(self.stdout_path.read_text(errors="replace")):
                return
            if not self.alive():
                break
            time.sleep(_POLL)
        code = self.process.poll() if self.process else None
        self.kill()
        tail = self.stderr_path.read_text(errors="replace")[-3000:]
        raise StartError(f"{self.name} did not become ready (exit {code}); its stderr:\n{tail}")

    def signal(self, signum: int) -> bool:
        """Send `signum` to the process itself; False when it is not running."""
        with self._lock:
            if not self.alive() or self.process is None:
                return False
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)
                return True
            return False

    def kill(self) -> int | None:
        """SIGKILL to its whole process group (like `kill -9`), then reap; its exit code."""
        with self._lock:
            process = self.process
            if process is None:
                return None
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            return self._reap(process, 10.0)

    def terminate(self, grace: float = TERMINATE_GRACE) -> int | None:
        """SIGTERM and wait up to `grace` seconds for a graceful exit, then SIGKILL."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                return self.kill()
        # Anything it started in its group goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        return process.poll()

    def wait(self, timeout: float) -> int | None:
        """Its exit code once it exits within `timeout` seconds, else None (still running)."""
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    @staticmethod
    def _reap(process: subprocess.Popen[bytes], timeout: float) -> int | None:
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


@dataclass
class ProcessSet:
    """Every child of a run; `kill_all` (also registered with atexit) leaves none behind."""

    processes: list[ManagedProcess] = field(default_factory=list)
    closed: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        atexit.register(self.kill_all)

    def add(self, process: ManagedProcess) -> ManagedProcess:
        process.closed = self.closed
        self.processes.append(process)
        return process

    def kill_all(self) -> None:
        """Kill every child; none can be started any more (a start in progress is killed)."""
        self.closed.set()
        for process in reversed(self.processes):
            process.kill()

    def close(self) -> None:
        self.kill_all()
        atexit.unregister(self.kill_all)
