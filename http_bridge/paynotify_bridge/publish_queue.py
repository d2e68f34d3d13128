"""What the bridge's publish streams share: settings, the callers' waiters and the queue of items.

A `Waiter` is one caller's item and, once known, its outcome (the first one set wins). `WorkQueue`
holds the items no stream holds and the condition that guards every stream's state; a stream takes
a batch from it when gRPC asks for its next request, and gives back what it could not get answered.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc

from paynotify.v1 import hub_pb2

__all__ = ["PublishStreamError", "StreamSettings", "Taker", "Waiter", "WorkQueue", "closed_error"]

_Code = grpc.StatusCode


class Taker(Protocol):
    """The stream-side state `WorkQueue.take` reads and writes (under `WorkQueue.cond`)."""

    sent: dict[int, Waiter]
    accepting: bool
    answered: bool
    expires: float
    retired: threading.Event


@dataclass(frozen=True)
class StreamSettings:
    """How a StreamPool uses its streams; the defaults suit the bridge.

    streams: PublishStream calls open at once. max_batch, max_batch_bytes: most items and bytes in
    one request (the hub takes 4 MiB messages; a larger item still goes, alone). max_in_flight: most
    unanswered items per stream (the hub allows 10 000). max_age: seconds (less up to 20% jitter) a
    stream takes items before it is replaced. max_attempts: an item fails once this many streams
    broke under it. min_backoff, max_backoff: before reopening after a break with no answer.
    """

    streams: int = 2
    max_batch: int = 500
    max_batch_bytes: int = 1024 * 1024
    max_in_flight: int = 1000
    max_age: float = 60.0
    max_attempts: int = 4
    min_backoff: float = 0.1
    max_backoff: float = 2.0


class PublishStreamError(Exception):
    """No PublishResponse for an item: the gRPC status code Publish would have failed with."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


def closed_error() -> PublishStreamError:
    return PublishStreamError(_Code.UNAVAILABLE, "the publisher is closed")


class Waiter:
    """One caller's item and, once known, its outcome (the first one set wins)."""

    def __init__(self, request: hub_pb2.PublishRequest, deadline: float) -> None:
        self.request = request
        self.size = request.ByteSize()
        self.deadline = deadline
        self.attempts = 0
        self.stream: Taker | None = None  # the stream that sent it and owes its answer
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._outcome: hub_pb2.PublishResponse | PublishStreamError | None = None

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def resolve(self, outcome: hub_pb2.PublishResponse | PublishStreamError) -> None:
        with self._lock:
            if self._outcome is None:
                self._outcome = outcome
                self._done.set()

    def result(self) -> hub_pb2.PublishResponse:
        if not self._done.wait(max(0.0, self.deadline - time.monotonic())):
            stream = self.stream
            if stream is not None and stream.answered:  # a hub has it and did not answer in time
                self.resolve(PublishStreamError(_Code.DEADLINE_EXCEEDED, "no answer in time"))
            else:
                self.resolve(PublishStreamError(_Code.UNAVAILABLE, "no hub took it in time"))
        if isinstance(self._outcome, PublishStreamError):
            raise self._outcome
        assert self._outcome is not None
        return self._outcome


class WorkQueue:
    """The items no stream holds, and the condition guarding every stream's state."""

    def __init__(self, settings: StreamSettings) -> None:
        self.settings = settings
        self.cond = threading.Condition()
        self.closed = False
        self._waiting: collections.deque[Waiter] = collections.deque()
        self._full_takers = 0  # takers waiting with no room for another item
        self._refs = itertools.count(1)

    def put(self, waiter: Waiter) -> None:
        with self.cond:
            if not self.closed:
                self._waiting.append(waiter)
                # One taker is enough (waking them all would wake one per stream to find nothing),
                # unless a waiting one has no room: it would take nothing.
                if self._full_takers:
                    self.cond.notify_all()
                else:
                    self.cond.notify()
                return
        waiter.resolve(closed_error())

    def retry(self, waiters: Sequence[Waiter], error: PublishStreamError) -> None:
        """Queue again, first in line, what a stream did not answer; or fail it with `error`."""
        failed = []
        with self.cond:
            for waiter in reversed(waiters):
                waiter.stream = None
                waiter.attempts += 1
                if self.closed or waiter.attempts >= self.settings.max_attempts:
                    failed.append(waiter)
                elif not waiter.done and waiter.deadline > time.monotonic():
                    self._waiting.appendleft(waiter)
            self.cond.notify_all()
        for waiter in failed:
            waiter.resolve(closed_error() if self.closed else error)

    def take(self, stream: Taker) -> list[tuple[int, Waiter]] | None:
        """Block until there are items for `stream`; them by ref, or None when it takes no more."""
        with self.cond:
            while True:
                left = stream.expires - time.monotonic()
                if self.closed or not stream.accepting or left <= 0:
                    stream.accepting = False
                    stream.retired.set()
                    return None
                room = min(self.settings.max_batch, self.settings.max_in_flight - len(stream.sent))
                taken = [(next(self._refs), waiter) for waiter in self._pop(room)]
                for ref, waiter in taken:
                    stream.sent[ref] = waiter
                    waiter.stream = stream
                if taken:
                    if self._waiting:  # more than a batch: the next taker goes on with the rest
                        self.cond.notify()
                    return taken
                full = room <= 0
                self._full_takers += full
                try:
                    self.cond.wait(left)
                finally:
                    self._full_takers -= full

    def _pop(self, limit: int) -> Iterator[Waiter]:
        size, now = 0, time.monotonic()
        while self._waiting and limit > 0:
            if size and size + self._waiting[0].size > self.settings.max_batch_bytes:
                return
            waiter = self._waiting.popleft()
            if not waiter.done and waiter.deadline > now:  # else its caller has given up
                size += waiter.size
                limit -= 1
                yield waiter

    def close(self, streams: Sequence[Taker]) -> list[Waiter]:
        """Stop every stream taking items; return every item queued or unanswered."""
        with self.cond:
            self.closed = True
            orphans = list(self._waiting)
            self._waiting.clear()
            for stream in streams:
                stream.accepting = False
                orphans += stream.sent.values()
                stream.sent.clear()
            self.cond.notify_all()
        return orphans
