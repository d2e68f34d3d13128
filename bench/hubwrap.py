"""`paynotify` under measurement: store calls counted, and experiments that prototype a change.

    python -m bench.hubwrap [--switch-interval S] hub --listen ... --store ...

After the optional flags, the same arguments as `paynotify`. No project file is changed: the store
classes' async methods are wrapped in this process only.

- Every public async verb of the SQLite and PostgreSQL stores is counted (calls, and seconds
  awaited, queueing included). On SIGUSR1 one line ``STORECOUNTS {...}`` goes to stdout;
  `bench.profile --count-store` takes one before and one after its load.
- `--switch-interval S`: `sys.setswitchinterval(S)` (the bridge uses 0.0005).
- `--stages`: stamp each notification's stages in the hub (`bench.stages`); SIGUSR1 also prints
  one line ``STAGES {...}`` with their percentiles since the last one.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import signal
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

from bench.stages import MARKER as STAGES_MARKER
from bench.stages import StageTrace, install

__all__ = ["MARKER", "main"]

MARKER = "STORECOUNTS "
# Store verbs that are plain methods returning an awaitable (queued when called).
QUEUED_VERBS = frozenset({"claim"})
_calls: Counter[str] = Counter()
_seconds: defaultdict[str, float] = defaultdict(float)
_lock = threading.Lock()
_trace: StageTrace | None = None  # with --stages
_hooks = contextlib.ExitStack()  # holds the stage hooks for the life of the process


def _counted(name: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """Count a verb and time it from the call until its outcome is awaited. The verb is called at
    once, as without the wrapper: a coroutine starts when awaited, and a verb that queues its
    work when called (SQLiteStore.claim) still queues it then."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Awaitable[Any]:
        started = time.perf_counter()
        called = method(*args, **kwargs)

        async def outcome() -> Any:
            try:
                return await called
            finally:
                with _lock:
                    _calls[name] += 1
                    _seconds[name] += time.perf_counter() - started

        return outcome()

    return wrapper


def _instrument(cls: type) -> None:
    for name, member in list(vars(cls).items()):
        if name.startswith("_") or not callable(member):
            continue
        if inspect.iscoroutinefunction(member) or name in QUEUED_VERBS:
            setattr(cls, name, _counted(name, member))


def _time_sqlite_batches() -> None:
    """Count the SQLite worker's group commits: batches, verbs in them, wall time on the thread."""
    from paynotify_hub.store import sqlite

    worker = getattr(sqlite, "_Worker", None)
    original = getattr(worker, "_run_batch", None)
    if worker is None or original is None:
        return

    def run_batch(self: Any, batch: list[Any]) -> None:
        started = time.perf_counter()
        try:
            original(self, batch)
        finally:
            with _lock:
                _calls["(sqlite batches)"] += 1
                _calls["(sqlite batched verbs)"] += len(batch)
                _seconds["(sqlite batches)"] += time.perf_counter() - started

    worker._run_batch = run_batch


def _dump(signum: int, frame: FrameType | None) -> None:
    with _lock:
        data = {"calls": dict(_calls), "seconds": {k: round(v, 6) for k, v in _seconds.items()}}
    print(MARKER + json.dumps(data), flush=True)
    if _trace is not None:
        print(STAGES_MARKER + json.dumps(_trace.report()), flush=True)


def main() -> int:
    global _trace
    from paynotify_hub.store.postgres import PostgresStore
    from paynotify_hub.store.sqlite import SQLiteStore

    _instrument(SQLiteStore)
    _instrument(PostgresStore)
    _time_sqlite_batches()
    signal.signal(signal.SIGUSR1, _dump)
    args = sys.argv[1:]
    while args and args[0].startswith("--") and args[0] != "--log-level":
        flag = args.pop(0)
        if flag == "--switch-interval":
            sys.setswitchinterval(float(args.pop(0)))
        elif flag == "--stages":
            _trace = StageTrace()
            _hooks.enter_context(install(_trace))
        else:
            raise SystemExit(f"bench.hubwrap: unknown flag {flag}")
    from paynotify_cli.main import main as paynotify

    return paynotify(args)


if __name__ == "__main__":
    sys.exit(main())
