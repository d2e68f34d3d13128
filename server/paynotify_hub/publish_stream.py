"""PublishStream: many publishes over one long-lived stream, answered by `ref` as they settle.

Each item runs as its own task through the same code as unary Publish; results go out in batches
(everything settled since the last write shares one message). The stream holds at most
`MAX_ITEMS_IN_FLIGHT` items; more are answered RESOURCE_EXHAUSTED at once. Results not yet sent
count too: while as many wait for a caller that does not read, the hub stops reading its items
(HTTP/2 flow control then holds the caller back) instead of piling up results. When the caller
half-closes, the items still waiting are answered before the stream ends; when it cancels, they are
abandoned (what they stored stays stored: publishing again finds it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

import grpc

from paynotify.v1 import hub_pb2
from paynotify_hub.errors import HubError, InvalidArgument, ShuttingDown
from paynotify_hub.status import status_code_for

__all__ = ["MAX_ITEMS_IN_FLIGHT", "MAX_RESULTS_PER_MESSAGE", "ItemPublish", "PublishStreamSession"]

logger = logging.getLogger(__name__)

# Items one stream may have waiting at once (bounds the hub's memory per caller).
MAX_ITEMS_IN_FLIGHT: Final = 10_000
# Results one response carries; more go out in several (each result is a few hundred bytes).
MAX_RESULTS_PER_MESSAGE: Final = 1_000

# Publish one item's request, waiting at most the given seconds (None: the hub's maximum).
ItemPublish = Callable[[hub_pb2.PublishRequest, float | None], Awaitable[hub_pb2.PublishResponse]]


def _error_result(ref: int, code: grpc.StatusCode, message: str) -> hub_pb2.PublishItemResult:
    number = code.value[0]
    return hub_pb2.PublishItemResult(ref=ref, error_code=number, error_message=message)


class PublishStreamSession:
    """One PublishStream call: `responses(requests)` is the response iterator.

    `is_undecodable(request)` tells a request the lenient deserializer could not parse (the stream
    then ends INVALID_ARGUMENT); `error` holds why the stream failed after `responses` ended.
    """

    def __init__(
        self,
        publish: ItemPublish,
        undecodable_reason: Callable[[object], str | None],
        *,
        max_in_flight: int = MAX_ITEMS_IN_FLIGHT,
    ) -> None:
        self._publish = publish
        self._undecodable_reason = undecodable_reason
        self._max_in_flight = max_in_flight
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._results: list[hub_pb2.PublishItemResult] = []
        self._news = asyncio.Event()
        # Set whenever results were taken for sending: the reader may go on.
        self._room = asyncio.Event()
        self._reading = True
        self._hub_ended = False
        self.error: HubError | None = None

    def hub_ended(self) -> None:
        """The hub ended its streams: answer what still waits, then end with UNAVAILABLE."""
        self._hub_ended = True
        self._news.set()

    async def responses(
        self, requests: AsyncIterator[hub_pb2.PublishStreamRequest]
    ) -> AsyncIterator[hub_pb2.PublishStreamResponse]:
        reader = asyncio.create_task(self._read(requests), name="publish-stream reader")
        try:
            while True:
                await self._news.wait()
                self._news.clear()
                while self._results:
                    batch = self._results[:MAX_RESULTS_PER_MESSAGE]
                    del self._results[:MAX_RESULTS_PER_MESSAGE]
                    self._room.set()
                    yield hub_pb2.PublishStreamResponse(results=batch)
                if self.error is not None or (not self._reading and not self._tasks):
                    return
                if self._hub_ended and not self._tasks:
                    self.error = ShuttingDown("hub shutting down; publish again on another hub")
                    return
        finally:
            reader.cancel()
            tasks = [reader, *self._tasks.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _read(self, requests: AsyncIterator[hub_pb2.PublishStreamRequest]) -> None:
        try:
            async for request in requests:
                reason = self._undecodable_reason(request)
                if reason is not None:
                    raise InvalidArgument(reason)
                for item in request.items:
                    await self._wait_for_room()
                    self._start(item)
        except HubError as exc:
            self.error = exc
        finally:
            self._reading = False
            self._news.set()

    async def _wait_for_room(self) -> None:
        """Until fewer than max_in_flight results wait to be sent (a caller that sends but does
        not read would otherwise grow them without bound, RESOURCE_EXHAUSTED answers included)."""
        while len(self._results) >= self._max_in_flight:
            self._room.clear()
            await self._room.wait()

    def _start(self, item: hub_pb2.PublishItem) -> None:
        ref = item.ref
        if ref in self._tasks:
            self._answer(
                _error_result(
                    ref, grpc.StatusCode.INVALID_ARGUMENT, f"ref {ref} is already in flight"
                )
            )
        elif len(self._tasks) >= self._max_in_flight:
            self._answer(
                _error_result(
                    ref,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{self._max_in_flight} items already in flight on this stream; "
                    "wait for results or open another stream",
                )
            )
        else:
            wait = item.wait.ToNanoseconds() / 1e9 if item.HasField("wait") else None
            self._tasks[ref] = asyncio.create_task(self._one(ref, item.request, wait))

    async def _one(self, ref: int, request: hub_pb2.PublishRequest, wait: float | None) -> None:
        try:
            response = await self._publish(request, wait)
            result = hub_pb2.PublishItemResult(ref=ref, response=response)
        except HubError as exc:
            result = _error_result(ref, status_code_for(exc), str(exc))
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("publish of stream item %d failed", ref)
            result = _error_result(ref, grpc.StatusCode.INTERNAL, "internal error; publish again")
        finally:
            self._tasks.pop(ref, None)
        self._answer(result)

    def _answer(self, result: hub_pb2.PublishItemResult) -> None:
        self._results.append(result)
        self._news.set()
