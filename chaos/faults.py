"""The fault injector: faults at random intervals, bounded in count and time.

    injector = FaultInjector(cluster, plan, rng, pg_restart=restart_fn)
    injector.start(); ...; injector.stop()
    injector.events        # FaultEvent per fault: kind, target, outcome, when

Two lanes run side by side, each one fault at a time: processes (hub-kill, pg-restart, bridge-kill)
and members (subscriber-crash, subscriber-restart). In each lane every enabled kind is injected once
first, in that order, then kinds are chosen at random by weight:
    hub-kill            kill -9 a hub (its process group), restart it on the same port and store
    subscriber-crash    SIGUSR1 a member: it SIGKILLs itself inside its next callback, before the
                        ack (outcome "in-callback"); with no delivery in time it is killed from
                        outside ("idle"); then restarted
    subscriber-restart  SIGTERM a member (a graceful stream drop: its acks land), restart it
    bridge-kill         kill -9 a bridge (requests in progress lose their reply), restart it
    pg-restart          restart the PostgreSQL cluster (multi-hub mode, only when allowed)
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from chaos.procs import ManagedProcess, StartError
from chaos.topology import Cluster, Member

__all__ = ["FAULT_KINDS", "FaultEvent", "FaultInjector", "FaultPlan"]

FAULT_KINDS: Final = (
    "hub-kill",
    "subscriber-crash",
    "subscriber-restart",
    "bridge-kill",
    "pg-restart",
)
WEIGHTS: Final = {
    "hub-kill": 3.0,
    "subscriber-crash": 4.0,
    "subscriber-restart": 2.0,
    "bridge-kill": 1.0,
    "pg-restart": 1.0,
}
# Faults of one lane happen one at a time; the lanes run side by side.
LANES: Final = (
    ("hub-kill", "pg-restart", "bridge-kill"),
    ("subscriber-crash", "subscriber-restart"),
)
RESTART_TRIES: Final = 5
BUSY_SAMPLE: Final = 0.3


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


@dataclass(frozen=True)
class FaultPlan:
    kinds: tuple[str, ...]
    interval: tuple[float, float]  # seconds between faults
    window: float  # no fault starts later than this after start()
    max_faults: int
    down: tuple[float, float] = (0.2, 1.5)  # how long a killed process stays down
    crash_wait: float = 4.0  # how long an armed member may take to crash in a callback
    pg_restarts: int = 2
    pg_spacing: float = 20.0  # seconds at least between two PostgreSQL restarts


@dataclass
class FaultEvent:
    kind: str
    target: str
    started: float  # time.time()
    ended: float = 0.0
    outcome: str = ""
    ok: bool = True
    detail: str = ""


@dataclass
class FaultInjector:
    cluster: Cluster
    plan: FaultPlan
    rng: random.Random
    pg_restart: Callable[[], float] | None = None
    events: list[FaultEvent] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._last_pg = float("-inf")
        self._started = time.monotonic()
        self._threads = [
            threading.Thread(target=self._lane, args=(kinds,), name=f"faults-{i}", daemon=True)
            for i, lane in enumerate(LANES)
            if (kinds := [k for k in lane if k in self.plan.kinds])
        ]

    def start(self) -> None:
        self._started = time.monotonic()
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 120.0) -> None:
        """No new fault; those in progress finish (their processes restarted)."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.1))

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for event in list(self.events):
            key = f"{event.kind} ({event.outcome})" if event.outcome else event.kind
            counts[key] = counts.get(key, 0) + 1
        return counts

    # -- the lanes --------------------------------------------------------------------------------

    def _lane(self, kinds: list[str]) -> None:
        """One fault at a time among `kinds`; lanes run side by side (a member may crash while a
        hub is down), and never target the same process."""
        first_pass = kinds[::-1]  # popped from the end: each kind once, in the lane's order
        while not self._stop.wait(self.rng.uniform(*self.plan.interval)):
            if time.monotonic() - self._started > self.plan.window:
                return
            kind = self._pick(kinds, first_pass)
            if kind is None:
                continue
            try:
                self._inject(kind)
            except Exception as exc:  # a failed fault is reported, never ends the run
                self.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
            if len(self.events) >= self.plan.max_faults:
                return

    def _pick(self, kinds: list[str], first_pass: list[str]) -> str | None:
        with self._lock:
            if len(self.events) >= self.plan.max_faults:
                return None
            while first_pass:
                kind = first_pass.pop()
                if self._allowed(kind):
                    return kind
            allowed = [k for k in kinds if self._allowed(k)]
            if not allowed:
                return None
            return self.rng.choices(allowed, [WEIGHTS[k] for k in allowed])[0]

    def _allowed(self, kind: str) -> bool:
        if kind != "pg-restart":
            return True
        done = sum(1 for e in self.events if e.kind == kind)
        spaced = time.monotonic() - self._last_pg >= self.plan.pg_spacing
        return self.pg_restart is not None and done < self.plan.pg_restarts and spaced

    def _inject(self, kind: str) -> None:
        action = {
            "hub-kill": self._hub_kill,
            "subscriber-crash": self._subscriber_crash,
            "subscriber-restart": self._subscriber_restart,
            "bridge-kill": self._bridge_kill,
            "pg-restart": self._pg_restart,
        }[kind]
        action()

    def _record(self, kind: str, target: str) -> FaultEvent:
        event = FaultEvent(kind, target, time.time())
        with self._lock:
            self.events.append(event)
        return event

    # -- the faults -------------------------------------------------------------------------------

    def _hub_kill(self) -> None:
        hub = self.rng.choice(self.cluster.hubs)
        self._kill_and_restart("hub-kill", hub)

    def _bridge_kill(self) -> None:
        bridge = self.rng.choice(self.cluster.bridges)
        self._kill_and_restart("bridge-kill", bridge)

    def _kill_and_restart(self, kind: str, process: ManagedProcess) -> None:
        event = self._record(kind, process.name)
        code = process.kill()
        event.outcome = "killed" if code == -signal.SIGKILL else f"exit {code}"
        down = self.rng.uniform(*self.plan.down)
        event.detail = f"down {down:.1f}s"
        time.sleep(down)
        self._restart(process, event)

    def _busy_member(self) -> Member:
        """A member that is receiving right now (its log grows), so an armed crash finds a
        callback to crash in; any member when none is."""
        members = self.cluster.members
        before = [_size(m.log_path) for m in members]
        time.sleep(BUSY_SAMPLE)
        busy = [m for m, size in zip(members, before, strict=True) if _size(m.log_path) > size]
        return self.rng.choice(busy or members)

    def _subscriber_crash(self) -> None:
        member = self._busy_member()
        event = self._record("subscriber-crash", member.name)
        process = member.process
        if process.signal(signal.SIGUSR1):
            code = process.wait(self.plan.crash_wait)
            event.outcome = "in-callback" if code == -signal.SIGKILL else "idle"
        else:
            event.outcome = "not running"
        if process.alive():
            process.kill()
        time.sleep(self.rng.uniform(0.0, self.plan.down[1]))
        self._restart(process, event)

    def _subscriber_restart(self) -> None:
        member = self.rng.choice(self.cluster.members)
        event = self._record("subscriber-restart", member.name)
        code = member.process.terminate(grace=10.0)
        event.outcome = "graceful" if code == 0 else f"exit {code}"
        event.detail = f"stopped in {time.time() - event.started:.1f}s"
        self._restart(member.process, event)

    def _pg_restart(self) -> None:
        assert self.pg_restart is not None
        event = self._record("pg-restart", "postgresql")
        self._last_pg = time.monotonic()
        try:
            took = self.pg_restart()
            event.outcome, event.detail = "restarted", f"took {took:.1f}s"
        except Exception as exc:
            event.ok, event.outcome = False, f"failed: {exc}"
            self.errors.append(f"pg-restart: {exc}")
        finally:
            self._last_pg = time.monotonic()
            event.ended = time.time()

    def _restart(self, process: ManagedProcess, event: FaultEvent) -> None:
        started = time.monotonic()
        for attempt in range(1, RESTART_TRIES + 1):
            try:
                process.start()
                break
            except StartError as exc:
                if attempt == RESTART_TRIES:
                    event.ok = False
                    self.errors.append(f"restart of {process.name} failed: {exc}")
                time.sleep(0.5 * attempt)
        took = f"started again in {time.monotonic() - started:.1f}s"
        event.detail = f"{event.detail}, {took}" if event.detail else took
        event.ended = time.time()
