"""A subscriber service for the chaos run: records every delivery, acks it, crashes when told to.

    python -m chaos.subscriber_proc --hub 127.0.0.1:50051 --group billing --member billing-1 \\
        --log RUN/subscribers/billing-1.jsonl

It uses the real client library (`paynotify_client.Subscriber`). Its log is append-only JSON lines,
each written and fsync'd before the step it records, so neither SIGKILL nor a power cut loses one:

    {"e": "start", "pid": 123}
    {"e": "recv", "d": DELIVERY_ID, "n": NOTIFICATION_ID, "p": PAYMENT_ID, "a": ATTEMPT}
    {"e": "ack", "d": ..., "n": ..., "a": ...}       about to call message.ack()
    {"e": "nack", "d": ..., "n": ..., "a": ...}      about to call message.nack()
    {"e": "res", "d": ..., "k": "ack", "s": "ok"}    the hub's answer to an action (confirmed)
    {"e": "crash", "d": ..., "stage": "working"}     about to SIGKILL itself, inside the callback
    {"e": "stop"}                                    graceful exit

Every line also has "g" (group), "m" (member) and "t" (time.time()), so logs can be merged.

Signals: SIGUSR1 arms a crash: the next callback kills the process with SIGKILL at a random point
before its ack ("received": right after recording the receipt; "working": in the middle of the
work; "acking": after recording the intent to ack, before `ack()`). SIGTERM or SIGINT close the
subscriber gracefully (running callbacks finish, their acks land) and it exits 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any, Final

from paynotify.v1 import hub_pb2
from paynotify_client import Backoff, FlowControl, Message, Subscriber

__all__ = ["READY_LINE", "CrashableHandler", "JsonLog", "main"]

READY_LINE: Final = "chaos-subscriber ready"
CRASH_STAGES: Final = ("received", "working", "acking")
CLOSE_TIMEOUT: Final = 5.0
RECONNECT: Final = Backoff(initial=0.05, maximum=1.0)


class JsonLog:
    """Append-only JSON lines, fsync'd one by one; safe from any thread."""

    def __init__(self, path: Path, fields: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._fields = fields
        self._lock = threading.Lock()

    def write(self, event: str, **values: Any) -> None:
        record = {"e": event, **self._fields, **values, "t": time.time()}
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        with self._lock:
            os.write(self._fd, line)
            os.fsync(self._fd)

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)


class CrashableHandler:
    """The callback: record, work a little, ack (or sometimes nack); crash inside it when armed."""

    def __init__(
        self, log: JsonLog, rng: random.Random, work_seconds: float, nack_probability: float
    ) -> None:
        self._log = log
        self._rng = rng
        self._rng_lock = threading.Lock()
        self._work = work_seconds
        self._nack_probability = nack_probability
        self._armed = threading.Event()
        self._arm_lock = threading.Lock()

    def arm(self) -> None:
        """The next callback crashes the process (called from a signal handler)."""
        self._armed.set()

    def __call__(self, message: Message) -> None:
        note = message.notification
        ids = {"d": message.delivery_id, "n": message.notification_id, "a": message.attempt}
        self._log.write("recv", p=note.payment_id or note.payment_request_id, **ids)
        stage = self._take_crash_stage()
        if stage == "received":
            self._crash(ids, stage)
        with self._rng_lock:
            work, nack = self._rng.uniform(0, self._work), self._rng.random()
        time.sleep(work)
        if stage == "working":
            self._crash(ids, stage)
        if nack < self._nack_probability:
            self._log.write("nack", **ids)
            message.nack()
            return
        self._log.write("ack", **ids)
        if stage == "acking":
            self._crash(ids, stage)
        message.ack()

    def _take_crash_stage(self) -> str | None:
        if not self._armed.is_set():
            return None
        with self._arm_lock:
            if not self._armed.is_set():
                return None  # another callback took it
            self._armed.clear()
        with self._rng_lock:
            return self._rng.choice(CRASH_STAGES)

    def _crash(self, ids: dict[str, Any], stage: str) -> None:
        self._log.write("crash", stage=stage, **ids)
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)  # not reached: SIGKILL cannot be caught


def _action_hook(log: JsonLog) -> Any:
    def on_result(result: hub_pb2.ActionResult) -> None:
        kind = hub_pb2.ActionKind.Name(result.kind).removeprefix("ACTION_KIND_").lower()
        status = hub_pb2.ActionStatus.Name(result.status).removeprefix("ACTION_STATUS_").lower()
        log.write("res", d=result.delivery_id, k=kind, s=status)

    return on_result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--hub", required=True, help="HOST:PORT of the hub")
    add("--group", required=True)
    add("--member", required=True, help="client id, also the name in the log")
    add("--log", required=True, type=Path, help="the JSON lines file (appended)")
    add("--ack-deadline", type=float, default=2.0)
    add("--max-in-flight", type=int, default=16)
    add("--work-ms", type=float, default=5.0, help="each callback works 0..this long")
    add("--nack-probability", type=float, default=0.02)
    add("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    log = JsonLog(args.log, {"g": args.group, "m": args.member})
    rng = random.Random(f"{args.seed}:{args.member}:{os.getpid()}")
    handler = CrashableHandler(log, rng, args.work_ms / 1000, args.nack_probability)
    stop = threading.Event()

    def on_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    def on_arm(signum: int, frame: FrameType | None) -> None:
        handler.arm()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGUSR1, on_arm)
    log.write("start", pid=os.getpid())
    subscriber = Subscriber(
        args.hub,
        args.group,
        client_id=args.member,
        flow_control=FlowControl(max_in_flight=args.max_in_flight),
        ack_deadline=args.ack_deadline,
        backoff=RECONNECT,
        on_action_result=_action_hook(log),
    )
    future = subscriber.subscribe(handler)
    print(READY_LINE, flush=True)
    while not stop.wait(0.2) and not future.done():
        pass
    subscriber.close(CLOSE_TIMEOUT)
    log.write("stop")
    log.close()
    failed = future.done() and not stop.is_set() and future.exception(0) is not None
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
