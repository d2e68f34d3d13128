"""The bridge's WorkQueue wakes one stream's request iterator per item, never leaving an item
behind: real threads blocked in `take`, as gRPC's request-iterator threads are."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import pytest

from paynotify.v1 import hub_pb2
from paynotify_bridge.publish_queue import StreamSettings, Waiter, WorkQueue

T = TypeVar("T")

# Long enough for a thread woken in vain to have looked at the queue again on a loaded machine.
SETTLE = 0.3


class CountingTaker:
    """A stream's side of `take`: counts how often `take` looked at it (once per wake-up)."""

    def __init__(self) -> None:
        self.sent: dict[int, Waiter] = {}
        self.accepting = True
        self.answered = False
        self.retired = threading.Event()
        self.looks = 0
        self._expires = time.monotonic() + 30.0

    @property
    def expires(self) -> float:
        self.looks += 1
        return self._expires

    @expires.setter
    def expires(self, value: float) -> None:
        self._expires = value


def waiter(number: int) -> Waiter:
    request = hub_pb2.PublishRequest(receipt=hub_pb2.Receipt(request_id=f"r{number}"))
    return Waiter(request, time.monotonic() + 30.0)


class Queues:
    """Thread pool for takers, and the queues they block on: all closed at the end of a test,
    whatever way it ended, so no taker outlives it."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(4)
        self._queues: list[WorkQueue] = []

    def new(self, settings: StreamSettings) -> WorkQueue:
        queue = WorkQueue(settings)
        self._queues.append(queue)
        return queue

    def take(
        self, queue: WorkQueue, taker: CountingTaker
    ) -> Future[list[tuple[int, Waiter]] | None]:
        return self.executor.submit(queue.take, taker)

    def close(self) -> None:
        for queue in self._queues:
            queue.close([])
        self.executor.shutdown(wait=True)


@pytest.fixture
def queues() -> Iterator[Queues]:
    q = Queues()
    try:
        yield q
    finally:
        q.close()


def wait_until_blocked(queue: WorkQueue, *takers: CountingTaker) -> None:
    """Until each taker has looked once and is waiting on the queue's condition."""
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        with queue.cond:
            # CPython's Condition keeps its waiting threads in `_waiters`.
            waiting = len(queue.cond._waiters)  # type: ignore[attr-defined]
            if all(t.looks >= 1 for t in takers) and waiting == len(takers):
                return
        time.sleep(0.005)
    raise AssertionError("the takers did not block in take()")


def test_one_item_wakes_one_waiting_stream_not_all(queues: Queues) -> None:
    queue = queues.new(StreamSettings())
    a, b = CountingTaker(), CountingTaker()
    taken_a, taken_b = queues.take(queue, a), queues.take(queue, b)
    wait_until_blocked(queue, a, b)

    queue.put(waiter(1))
    done = _first_done(taken_a, taken_b)
    time.sleep(SETTLE)

    [(_, item)] = done.result() or []
    assert item.request.receipt.request_id == "r1"
    # Each looked once on entry; only the one that took the item looked again.
    assert a.looks + b.looks == 3


def test_a_stream_with_room_takes_the_item_when_a_full_one_waits_first(
    queues: Queues,
) -> None:
    queue = queues.new(StreamSettings(max_in_flight=1))
    full, free = CountingTaker(), CountingTaker()
    full.sent[0] = waiter(0)  # its one slot is held: it takes nothing
    taken_full = queues.take(queue, full)
    wait_until_blocked(queue, full)
    taken_free = queues.take(queue, free)
    wait_until_blocked(queue, full, free)

    queue.put(waiter(1))

    [(_, item)] = taken_free.result(timeout=2.0) or []
    assert item.request.receipt.request_id == "r1"
    assert not taken_full.done()


def test_more_than_a_batch_goes_on_with_the_next_stream(queues: Queues) -> None:
    queue = queues.new(StreamSettings(max_batch=2))
    a = CountingTaker()
    taken_a = queues.take(queue, a)
    wait_until_blocked(queue, a)
    with queue.cond:  # three items at once, and a second stream arriving behind them
        for number in range(3):
            queue.put(waiter(number))
        b = CountingTaker()
        taken_b = queues.take(queue, b)
        time.sleep(SETTLE)  # b waits for the lock, with the items queued
    taken = [f.result(timeout=2.0) or [] for f in (taken_a, taken_b)]
    ids = sorted(([w.request.receipt.request_id for _, w in t] for t in taken), key=len)
    assert ids == [["r2"], ["r0", "r1"]]  # a batch, then the rest: nothing left behind


def _first_done(*futures: Future[T]) -> Future[T]:
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        for future in futures:
            if future.done():
                return future
        time.sleep(0.002)
    raise AssertionError("no taker took the item")
