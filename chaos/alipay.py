"""Alipay, thousands of times over: each notification follows the retry schedule until SUCCESS.

The signing, sending and reply check are the simulator's own (`paynotify_bridge.simulator`:
`HttpSender`, `RetrySchedule`, `Attempt.succeeded`). `send_with_retries` runs that loop with one
thread asleep per notification; here the same loop is unrolled into events on a heap, so thousands
of notifications waiting for their next retry share a small pool of sending threads.

    streams = plan_streams(make_corpus(3000, "run1", rng), rng, send_window=150, ...)
    sim = AlipaySimulator(streams, bridge_urls, private_key, CLIENT_ID, workers=64)
    sim.start(); sim.wait(timeout); sim.stop()
    streams[i].attempts, streams[i].outcome          # what Alipay saw

Attempts go round-robin over the bridges; a refused connection moves on to the next bridge, as a
load balancer's next-upstream does. A *stream* is one sender's schedule for one notification. Every
distinct notification has one; a share also gets a second (a duplicate Alipay sends on its own,
e.g. a resend racing a retry or one sent again after SUCCESS), which must be answered like the
first.
"""

from __future__ import annotations

import heapq
import itertools
import json
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from cryptography.hazmat.primitives.asymmetric import rsa

from paynotify_bridge.simulator import HttpSender, RetrySchedule, builtin_samples, with_overrides

__all__ = [
    "AlipaySimulator",
    "AttemptRecord",
    "Notification",
    "Stream",
    "make_corpus",
    "plan_streams",
    "send_probe",
]

# Which shipped samples the corpus mixes, and how often (their identity fields are replaced).
SAMPLE_WEIGHTS: Final = {
    "payment_result_success": 0.65,
    "payment_result_instore_fx": 0.1,
    "payment_result_failed": 0.1,
    "offline_payment_code": 0.15,
}
# How HttpSender describes a refused connection (Attempt.error).
REFUSED: Final = "ConnectionRefusedError"
SUCCESS: Final = "success"
EXHAUSTED: Final = "exhausted"
UNFINISHED: Final = "unfinished"


@dataclass(frozen=True)
class Notification:
    index: int
    payment_id: str
    sample: str
    notify_type: str
    body: bytes


@dataclass(frozen=True)
class AttemptRecord:
    number: int
    bridge: int
    started: float  # time.time()
    ended: float
    status: int | None  # None: no HTTP reply (refused, reset, timed out)
    success: bool
    error: str = ""


@dataclass
class Stream:
    id: int
    notification: Notification
    duplicate: bool
    start_at: float  # seconds after the simulator starts
    waits: tuple[float, ...]  # before each attempt (the first is replaced by start_at)
    attempts: list[AttemptRecord] = field(default_factory=list)
    outcome: str = ""

    @property
    def success_at(self) -> float | None:
        return next((a.ended for a in self.attempts if a.success), None)


def make_corpus(count: int, tag: str, rng: random.Random) -> list[Notification]:
    """`count` distinct notifications: shipped samples with fresh paymentId/paymentRequestId."""
    samples = builtin_samples()
    names = list(SAMPLE_WEIGHTS)
    weights = [SAMPLE_WEIGHTS[n] for n in names]
    corpus = []
    for i in range(count):
        sample = rng.choices(names, weights)[0]
        payment_id = f"CHAOS{tag}{i:07d}"
        overrides = {"paymentId": payment_id, "paymentRequestId": f"chaos-{tag}-{i}"}
        body = with_overrides(samples[sample], overrides)
        notify_type = str(json.loads(body)["notifyType"])
        corpus.append(Notification(i, payment_id, sample, notify_type, body))
    return corpus


def plan_streams(
    corpus: Sequence[Notification],
    rng: random.Random,
    *,
    send_window: float,
    duplicate_fraction: float,
    duplicate_delay: float,
    schedule: RetrySchedule,
) -> list[Stream]:
    """First sends spread evenly (with jitter) over `send_window` seconds; duplicates start up to
    `duplicate_delay` seconds after their original (half of them within a quarter second)."""
    waits = tuple(schedule.waits())
    gap = send_window / max(len(corpus), 1)
    streams: list[Stream] = []
    for n in corpus:
        start = n.index * gap + rng.uniform(0, gap)
        streams.append(Stream(len(streams), n, False, start, waits))
        if rng.random() < duplicate_fraction:
            racing = rng.random() < 0.5
            delay = rng.uniform(0, 0.25) if racing else rng.uniform(0, duplicate_delay)
            streams.append(Stream(len(streams), n, True, start + delay, waits))
    return streams


class AlipaySimulator:
    """Runs every stream's schedule on `workers` threads; attempts go round-robin to the bridges."""

    def __init__(
        self,
        streams: Sequence[Stream],
        urls: Sequence[str],
        private_key: rsa.RSAPrivateKey,
        client_id: str,
        *,
        workers: int,
        http_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not urls:
            raise ValueError("no bridge to send to")
        self.streams = list(streams)
        self._urls = list(urls)
        self._key = private_key
        self._client_id = client_id
        self._http_timeout = http_timeout
        self._clock = clock
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Stream]] = []
        self._seq = itertools.count()
        self._next_bridge = itertools.count()
        self._remaining = len(self.streams)
        self._stopping = False
        self._sweeping = False
        self._done = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, name=f"alipay-{i}", daemon=True)
            for i in range(workers)
        ]
        self.started_wall = 0.0

    def start(self) -> None:
        t0 = self._clock()
        self.started_wall = time.time()
        with self._cond:
            for stream in self.streams:
                heapq.heappush(self._heap, (t0 + stream.start_at, next(self._seq), stream))
            if not self.streams:
                self._done.set()
        for thread in self._threads:
            thread.start()

    def wait(self, timeout: float) -> bool:
        """Until every stream got SUCCESS or ran out of attempts; False on timeout."""
        return self._done.wait(timeout)

    def progress(self) -> tuple[int, int]:
        """(streams finished, streams in all)."""
        with self._cond:
            return len(self.streams) - self._remaining, len(self.streams)

    def sweep(self, timeout: float) -> bool:
        """The run's time bound: every stream still waiting gets one last attempt now (the rest of
        its schedule compressed to nothing); one that fails it stays UNFINISHED."""
        with self._cond:
            self._sweeping = True
            now = self._clock()
            self._heap = [(now, seq, stream) for _, seq, stream in self._heap]
            heapq.heapify(self._heap)
            self._cond.notify_all()
        return self._done.wait(timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Stop sending (attempts in progress finish, within `timeout` s in all); streams not
        finished by now are UNFINISHED."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + (self._http_timeout + 5 if timeout is None else timeout)
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(deadline - time.monotonic(), 0.0))
        with self._cond:
            for stream in self.streams:
                if not stream.outcome:
                    stream.outcome = UNFINISHED

    def _work(self) -> None:
        while True:
            stream = self._next_due()
            if stream is None:
                return
            self._attempt(stream)

    def _next_due(self) -> Stream | None:
        with self._cond:
            while not self._stopping and self._remaining > 0:
                if not self._heap:
                    self._cond.wait(0.5)
                    continue
                due = self._heap[0][0]
                delay = due - self._clock()
                if delay > 0:
                    self._cond.wait(min(delay, 0.5))
                    continue
                return heapq.heappop(self._heap)[2]
            return None

    def _send(self, stream: Stream, number: int) -> AttemptRecord:
        """One attempt through the "load balancer": round-robin, and like nginx's default
        `proxy_next_upstream error`, a bridge that refuses the connection passes the request on
        to the next one (a request that reached a bridge is never sent twice)."""
        first = next(self._next_bridge)
        started = time.time()
        for offset in range(len(self._urls)):
            bridge = (first + offset) % len(self._urls)
            sender = HttpSender(
                self._urls[bridge],
                self._key,
                self._client_id,
                stream.notification.body,
                timeout=self._http_timeout,
            )
            attempt = sender(number)
            if not attempt.error.startswith(REFUSED):
                break
        return AttemptRecord(
            number, bridge, started, time.time(), attempt.status, attempt.succeeded, attempt.error
        )

    def _attempt(self, stream: Stream) -> None:
        number = len(stream.attempts) + 1
        record = self._send(stream, number)
        with self._cond:
            stream.attempts.append(record)
            if record.success or number >= len(stream.waits) or self._sweeping:
                stream.outcome = _outcome(record.success, number >= len(stream.waits))
                self._remaining -= 1
                if self._remaining == 0:
                    self._done.set()
            else:
                due = self._clock() + stream.waits[number]
                heapq.heappush(self._heap, (due, next(self._seq), stream))
            self._cond.notify()


def _outcome(success: bool, exhausted: bool) -> str:
    if success:
        return SUCCESS
    return EXHAUSTED if exhausted else UNFINISHED


def send_probe(
    url: str,
    private_key: rsa.RSAPrivateKey,
    client_id: str,
    notification: Notification,
    *,
    attempts: int,
    gap: float,
    http_timeout: float,
) -> list[AttemptRecord]:
    """A fresh notification sent until SUCCESS, at most `attempts` times `gap` seconds apart:
    whether the system answers as it should once the faults have stopped."""
    records: list[AttemptRecord] = []
    sender = HttpSender(url, private_key, client_id, notification.body, timeout=http_timeout)
    for number in range(1, attempts + 1):
        started = time.time()
        attempt = sender(number)
        records.append(
            AttemptRecord(
                number, 0, started, time.time(), attempt.status, attempt.succeeded, attempt.error
            )
        )
        if attempt.succeeded:
            break
        time.sleep(gap)
    return records
