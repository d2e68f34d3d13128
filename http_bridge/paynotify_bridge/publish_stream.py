"""Many publishes over a few long-lived PublishStream calls, batched, results matched by `ref`.

Callers queue items; whichever stream's request iterator gRPC asks first takes everything queued
(up to a batch) as one PublishStreamRequest; a reader thread per stream resolves each result's
caller. The streams share one channel, whose round robin puts each new call on the next ready hub.
A stream stops taking items when it breaks, when the hub answers an item UNAVAILABLE (going away)
or RESOURCE_EXHAUSTED, or after `max_age` (so streams spread again over hubs that came back); it is
drained and its slot opens the next, after a backoff if it broke without answering anything. Publish
is idempotent at the hub, so what a broken stream left unanswered is queued again while its deadline
allows, for up to `max_attempts` breaks.

`generation` counts the streams that broke and the hubs that said they are going away (an item
answered UNAVAILABLE): a hub may have restarted, with another configuration, since a number read
before it (the bridge's acknowledged-body cache forgets everything then). A stream renewed after
`max_age` ends OK and does not count.

    by the deadline the caller has                      publish()
    a result holding a PublishResponse                  returns it
    a result holding an error; a stream refused         raises PublishStreamError(that code)
    nothing, its stream has been answering              raises PublishStreamError(DEADLINE_EXCEEDED)
    nothing, no hub took it; the pool is closed         raises PublishStreamError(UNAVAILABLE)
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

import grpc

from paynotify.v1 import hub_pb2, hub_pb2_grpc
from paynotify_bridge.publish_queue import (
    PublishStreamError,
    StreamSettings,
    Waiter,
    WorkQueue,
    closed_error,
)

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


class _Stream:
    """One PublishStream call: its request iterator, its reader, what it sent unanswered by ref."""

    def __init__(self, work: WorkQueue, hub_lost: Callable[[], None]) -> None:
        self._work = work
        self._hub_lost = hub_lost
        self.sent: dict[int, Waiter] = {}
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
        again: list[Waiter] = []
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
                if error.code == _Code.UNAVAILABLE:
                    self._hub_lost()
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
        if code != _Code.OK:
            self._hub_lost()
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
        self._work = WorkQueue(self._settings)
        self._lock = threading.Condition()
        self._closed = False
        self._readiness = 0  # counts the channel's changes to READY: a backoff ends at one
        self._on_connectivity = self._count_readiness  # one bound method, to unsubscribe it
        self._slots: list[threading.Thread] = []
        self._streams: set[_Stream] = set()
        self._generation = 0

    @property
    def generation(self) -> int:
        """Streams broken and hubs gone away so far (see the module docstring)."""
        return self._generation

    def publish(self, request: hub_pb2.PublishRequest) -> hub_pb2.PublishResponse:
        """The hub's answer to `request` within `timeout`; PublishStreamError without one."""
        waiter = Waiter(request, time.monotonic() + self._timeout)
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
            waiter.resolve(closed_error())
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

    def _hub_lost(self) -> None:
        with self._lock:
            self._generation += 1

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
            stream = _Stream(self._work, self._hub_lost)
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
