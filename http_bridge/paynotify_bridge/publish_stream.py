"""Many publishes over a few long-lived PublishStream calls, batched, results matched by `ref`.

Callers queue items; whichever stream's request iterator gRPC asks first takes everything queued
(up to a batch) as one PublishStreamRequest; a reader thread per stream resolves each result's
caller. The streams share one channel, whose round robin puts each new call on the next ready hub.
A stream stops taking items when it breaks, when the hub answers an item UNAVAILABLE (going away)
or RESOURCE_EXHAUSTED, or after `max_age` (so streams spread again over hubs that came back); it is
drained and its slot opens the next, after a backoff if it broke without answering anything. Publish
is idempotent at the hub, so what a broken stream left unanswered is queued again while its deadline
allows, for up to `max_attempts` breaks.

    by the deadline the caller has                      publish()
    a result holding a PublishResponse                  returns it
    a result holding an error; a stream refused         raises PublishStreamError(that code)
    nothing, its stream has been answering              raises PublishStreamError(DEADLINE_EXCEEDED)
    nothing, no hub took it; the pool is closed         raises PublishStreamError(UNAVAILABLE)
"""

from __future__ import annotations

import collections
import itertools
import logging
import random
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import grpc

from paynotify.v1 import hub_pb2, hub_pb2_grpc

__all__ = ["PublishStreamError", "StreamPool", "StreamSettings"]

logger = logging.getLogger(__name__)

CLOSE_TIMEOUT: Final = 5.0
_Code = grpc.StatusCode
_BY_NUMBER: Final = {code.value[0]: code for code in _Code}
# An item answered so goes out again, on another stream; any other error is its answer.
RETRYABLE_ITEM_CODES: Final = (_Code.UNAVAILABLE, _Code.RESOURCE_EXHAUSTED)
# A stream ending so has its unanswered items queued again; any other code fails them.
RETRYABLE_STREAM_CODES: Final = (
    *(_Code.OK, _Code.UNAVAILABLE, _Code.CANCELLED, _Code.INTERNAL, _Code.UNKNOWN),
    *(_Code.ABORTED, _Code.DEADLINE_EXCEEDED),
)


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


def _closed_error() -> PublishStreamError:
    return PublishStreamError(_Code.UNAVAILABLE, "the publisher is closed")


class _Waiter:
    """One caller's item and, once known, its outcome (the first one set wins)."""

    def __init__(self, request: hub_pb2.PublishRequest, deadline: float) -> None:
        self.request = request
        self.size = request.ByteSize()
        self.deadline = deadline
        self.attempts = 0
        self.stream: _Stream | None = None  # the stream that sent it and owes its answer
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


class _Work:
    """The items no stream holds, and the condition guarding every stream's state."""

    def __init__(self, settings: StreamSettings) -> None:
        self.settings = settings
        self.cond = threading.Condition()
        self.closed = False
        self._waiting: collections.deque[_Waiter] = collections.deque()
        self._refs = itertools.count(1)

    def put(self, waiter: _Waiter) -> None:
        with self.cond:
            if not self.closed:
                self._waiting.append(waiter)
                self.cond.notify_all()
                return
        waiter.resolve(_closed_error())

    def retry(self, waiters: Sequence[_Waiter], error: PublishStreamError) -> None:
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
            waiter.resolve(_closed_error() if self.closed else error)

    def take(self, stream: _Stream) -> list[tuple[int, _Waiter]] | None:
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
                    return taken
                self.cond.wait(left)

    def _pop(self, limit: int) -> Iterator[_Waiter]:
        size, now = 0, time.monotonic()
        while self._waiting and limit > 0:
            if size and size + self._waiting[0].size > self.settings.max_batch_bytes:
                return
            waiter = self._waiting.popleft()
            if not waiter.done and waiter.deadline > now:  # else its caller has given up
                size += waiter.size
                limit -= 1
                yield waiter

    def close(self, streams: Sequence[_Stream]) -> list[_Waiter]:
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


class _Stream:
    """One PublishStream call: its request iterator, its reader, what it sent unanswered by ref."""

    def __init__(self, work: _Work) -> None:
        self._work = work
        self.sent: dict[int, _Waiter] = {}
        self.accepting = True
        self.answered = False
        self.code, self.details = _Code.OK, ""
        self.expires = time.monotonic() + work.settings.max_age * random.uniform(0.8, 1.0)
        self.retired = threading.Event()  # takes no more items (it may still be draining)
        self.ended = threading.Event()
        self._call: Any = None
        self._reader = threading.Thread(target=self._read, name="publish-stream", daemon=True)

    def start(self, stub: hub_pb2_grpc.NotificationHubStub, metadata: tuple[Any, ...]) -> None:
        self._call = stub.PublishStream(self._requests(), metadata=metadata)
        self._reader.start()

    def retire(self) -> None:
        with self._work.cond:
            self.accepting = False
            self._work.cond.notify_all()
        self.retired.set()

    def cancel(self, join: float) -> None:
        self.retired.set()
        if self._call is not None:
            self._call.cancel()
        if self._reader.is_alive():
            self._reader.join(max(join, 0.0))

    def _requests(self) -> Iterator[hub_pb2.PublishStreamRequest]:
        while (taken := self._work.take(self)) is not None:
            now, request = time.monotonic(), hub_pb2.PublishStreamRequest()
            for ref, waiter in taken:
                item = request.items.add(ref=ref, request=waiter.request)
                item.wait.FromNanoseconds(max(1_000_000, int((waiter.deadline - now) * 1e9)))
            yield request

    def _read(self) -> None:
        code, details = _Code.OK, ""
        try:
            for response in self._call:
                self._answer(response.results)
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
        except Exception as exc:  # a bug here must not leave callers waiting on a dead stream
            logger.exception("PublishStream reader failed")
            code, details = _Code.UNKNOWN, repr(exc)
        self._end(code, details)

    def _answer(self, results: Sequence[hub_pb2.PublishItemResult]) -> None:
        with self._work.cond:
            self.answered = True
            if len(self.sent) >= self._work.settings.max_in_flight:
                self._work.cond.notify_all()  # room again on this stream
            found = [(self.sent.pop(result.ref, None), result) for result in results]
        again: list[_Waiter] = []
        retryable: PublishStreamError | None = None
        for waiter, result in found:
            if waiter is None:  # already failed by close()
                continue
            if result.error_code == 0:
                waiter.resolve(result.response)
                continue
            error = PublishStreamError(_status(result.error_code), result.error_message)
            if error.code in RETRYABLE_ITEM_CODES:
                again.append(waiter)
                retryable = error
            else:
                waiter.resolve(error)
        if retryable is not None:
            self.retire()  # the hub is going away, or this stream holds too much
            self._work.retry(again, retryable)

    def _end(self, code: grpc.StatusCode, details: str) -> None:
        with self._work.cond:
            self.accepting = False
            orphans = list(self.sent.values())
            self.sent.clear()
            self._work.cond.notify_all()  # its request iterator returns
        self.code, self.details = code, details
        self.ended.set()
        self.retired.set()
        if code == _Code.OK:
            error = PublishStreamError(_Code.UNAVAILABLE, "the stream ended unanswered")
        else:
            error = PublishStreamError(code, details)
        if code in RETRYABLE_STREAM_CODES:
            self._work.retry(orphans, error)
        else:
            for waiter in orphans:
                waiter.resolve(error)


class StreamPool:
    """Publishes over `settings.streams` PublishStream calls on `channel`; safe from any thread.

    The streams open at the first publish, each with `metadata`; every publish waits at most
    `timeout` seconds, and each item asks the hub to answer within what is left of it.
    """

    def __init__(
        self,
        channel: grpc.Channel,
        timeout: float,
        *,
        metadata: Sequence[tuple[str, str]] = (),
        settings: StreamSettings | None = None,
    ) -> None:
        self._channel = channel
        self._stub = hub_pb2_grpc.NotificationHubStub(channel)
        self._timeout = timeout
        self._metadata = tuple(metadata)
        self._settings = settings or StreamSettings()
        self._work = _Work(self._settings)
        self._lock = threading.Condition()
        self._closed = False
        self._readiness = 0  # counts the channel's changes to READY: a backoff ends at one
        self._on_connectivity = self._count_readiness  # one bound method, to unsubscribe it
        self._slots: list[threading.Thread] = []
        self._streams: set[_Stream] = set()

    def publish(self, request: hub_pb2.PublishRequest) -> hub_pb2.PublishResponse:
        """The hub's answer to `request` within `timeout`; PublishStreamError without one."""
        waiter = _Waiter(request, time.monotonic() + self._timeout)
        if not self._slots:
            self._start()
        self._work.put(waiter)
        return waiter.result()

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Fail every waiting item (UNAVAILABLE), cancel the streams, join the threads (bounded)."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
            streams = list(self._streams)
        if self._slots:
            self._channel.unsubscribe(self._on_connectivity)
        for waiter in self._work.close(streams):
            waiter.resolve(_closed_error())
        deadline = time.monotonic() + timeout
        for stream in streams:
            stream.cancel(join=deadline - time.monotonic())
        for slot in self._slots:
            slot.join(max(0.0, deadline - time.monotonic()))

    def _start(self) -> None:
        with self._lock:
            if self._slots or self._closed:
                return
            self._channel.subscribe(self._on_connectivity)
            for number in range(self._settings.streams):
                slot = threading.Thread(target=self._run_slot, name=f"publish-slot-{number}")
                slot.daemon = True
                self._slots.append(slot)
                slot.start()

    def _run_slot(self) -> None:
        """Keep one stream taking items: open the next when the last one retires."""
        failures = 0
        while (stream := self._open()) is not None:
            stream.retired.wait()
            if not stream.ended.is_set() or stream.code == _Code.OK or self._closed:
                failures = 0
                continue
            failures = 0 if stream.answered else failures + 1
            _log_break(stream, failures)
            if failures:
                s = self._settings
                backoff = min(s.max_backoff, s.min_backoff * 2 ** (failures - 1))
                self._pause(backoff * random.uniform(0.8, 1.2))

    def _pause(self, seconds: float) -> None:
        """Sleep `seconds`, less if the channel gets a hub back meanwhile or the pool closes."""
        with self._lock:
            seen = self._readiness
            self._lock.wait_for(lambda: self._closed or self._readiness != seen, seconds)

    def _count_readiness(self, state: grpc.ChannelConnectivity) -> None:
        if state == grpc.ChannelConnectivity.READY:
            with self._lock:
                self._readiness += 1
                self._lock.notify_all()

    def _open(self) -> _Stream | None:
        with self._lock:
            if self._closed:
                return None
            self._streams = {s for s in self._streams if not s.ended.is_set()}
            stream = _Stream(self._work)
            self._streams.add(stream)
            stream.start(self._stub, self._metadata)
            return stream


def _log_break(stream: _Stream, failures: int) -> None:
    then = "what it did not answer goes out again"
    if stream.code == _Code.UNIMPLEMENTED:
        then = "the hub predates PublishStream: upgrade the hubs before the bridge"
    elif stream.code not in RETRYABLE_STREAM_CODES:
        then = "what it did not answer fails"
    logger.log(
        logging.WARNING if failures <= 1 else logging.DEBUG,  # one line per outage, not a flood
        "a PublishStream to the hub ended: %s %s; %s",
        stream.code.name,
        stream.details,
        then,
        extra={"grpc_code": stream.code.name, "failures_in_a_row": failures},
    )


def _status(number: int) -> grpc.StatusCode:
    return _BY_NUMBER.get(number, _Code.UNKNOWN)
