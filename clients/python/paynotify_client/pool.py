"""The callback threads: up to a fixed number of threads that take work off one queue.

concurrent.futures' ThreadPoolExecutor does the same at a price paid for every delivery: a Future
with a Condition of its own, a work item, and a semaphore taken and given back around each task.
Nothing here waits for a callback's outcome, so none of that is needed: a task is a plain call.
As in ThreadPoolExecutor, a thread is started only when a task finds none waiting.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

__all__ = ["CallbackPool"]

logger = logging.getLogger(__name__)

Task = Callable[[], object]


class CallbackPool:
    """At most `threads` daemon threads running submitted tasks in the order submitted.

    A task must not raise: one that does is logged and the thread goes on with the next.
    `stop()` drops the tasks still queued (each one's `dropped` is called instead, on a pool
    thread) and ends the threads without waiting for them.
    """

    def __init__(self, threads: int, name: str) -> None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        self._size = threads
        self._name = name
        self._queue: queue.SimpleQueue[tuple[Task, Task] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards the counts below; no task is queued behind stop
        self._started = 0
        self._waiting = 0  # threads blocked on the queue
        self._stopped = False

    @property
    def threads(self) -> int:
        """How many threads have been started."""
        return self._started

    def submit(self, task: Task, dropped: Task) -> bool:
        """Queue `task`; if the pool stops before a thread takes it, `dropped` runs instead.
        False (nothing queued) once the pool is stopped."""
        with self._lock:
            if self._stopped:
                return False
            self._queue.put((task, dropped))
            if self._waiting == 0 and self._started < self._size:
                self._started += 1
                name = f"{self._name}_{self._started - 1}"
                threading.Thread(target=self._serve, name=name, daemon=True).start()
        return True

    def stop(self) -> None:
        """Run no more tasks: what is queued gets `dropped`; every thread then ends. Safe to call
        twice."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            for _ in range(self._started):
                self._queue.put(None)

    def _serve(self) -> None:
        while True:
            with self._lock:
                self._waiting += 1
            item = self._queue.get()
            with self._lock:
                self._waiting -= 1
            if item is None:
                return
            task, dropped = item
            try:
                (dropped if self._stopped else task)()
            except Exception:  # a bug in a task must not end the thread: later ones would wait
                logger.exception("paynotify callback thread: a task raised")
