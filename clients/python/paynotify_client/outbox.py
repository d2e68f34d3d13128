"""The actions waiting to be sent on one stream, turned into batched SubscribeRequests.

gRPC's sync client reads the request iterator on a thread of its own; each time it asks for the
next request, everything queued by then goes out as one SubscribeRequest. So acks leave as soon as
the previous request has been handed to the transport, and a burst of them shares one message.
An outbox belongs to one stream: once that stream ends, whatever it still holds is dropped (the hub
redelivers those deliveries), and actions put into it later are dropped too.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator

from paynotify.v1 import hub_pb2
from paynotify_client.actions import Action, action_count, build_request

__all__ = ["Outbox"]

logger = logging.getLogger(__name__)

# Most actions one SubscribeRequest carries; a larger backlog goes out in several.
MAX_BATCH = 1000


class Outbox:
    """Queue of one stream's actions; `requests()` is the stream's request iterator."""

    def __init__(self, open_request: hub_pb2.SubscribeRequest) -> None:
        self._open_request = open_request
        self._queue: queue.SimpleQueue[Action | None] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._closed = False
        self._unanswered = 0

    @property
    def closed(self) -> bool:
        """Whether the stream this outbox belongs to has ended (or is ending)."""
        with self._cond:
            return self._closed

    def put(self, action: Action) -> None:
        """Queue an action for the stream; dropped (logged at debug) once the stream has ended."""
        with self._cond:
            if self._closed:
                logger.debug(
                    "%s for delivery %s dropped: its stream has ended; the hub redelivers it",
                    type(action).__name__.lower(),
                    action.delivery_id,
                )
                return
            self._unanswered += 1
        self._queue.put(action)

    def answered(self, count: int) -> None:
        """The hub has answered `count` actions (one ActionResult each)."""
        with self._cond:
            self._unanswered = max(0, self._unanswered - count)
            self._cond.notify_all()

    def wait_answered(self, timeout: float) -> bool:
        """Block until every queued action has been answered by the hub, at most `timeout` s."""
        with self._cond:
            return self._cond.wait_for(lambda: self._unanswered == 0, timeout=max(timeout, 0.0))

    def close(self) -> int:
        """End the request iterator (the stream is half-closed); returns how many actions were
        queued or sent but not answered, which the hub will redeliver or has already dropped.
        """
        with self._cond:
            if self._closed:
                return 0
            self._closed = True
            pending = self._unanswered
            self._cond.notify_all()
        self._queue.put(None)
        return pending

    def requests(self) -> Iterator[hub_pb2.SubscribeRequest]:
        """The Open request, then one request per batch of queued actions, until closed."""
        yield self._open_request
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, ended = self._drain([first])
            request = build_request(batch)
            self.answered(len(batch) - action_count(request))  # superseded: no answer comes
            yield request
            if ended:
                return

    def _drain(self, batch: list[Action]) -> tuple[list[Action], bool]:
        while len(batch) < MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, False
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False
