"""CallbackPool: the subscriber's callback threads, on their own (the Subscriber tests run it end to
end against a real hub)."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from paynotify_client.pool import CallbackPool

BOUND = 10.0
# How long a task blocks until the test releases it: far past any stall of a loaded machine, so
# that no blocked task ends on its own (and lets a queued one run) before the test looks.
HOLD = 120.0


def test_tasks_run_on_the_pool_threads_up_to_its_size_at_once() -> None:
    pool = CallbackPool(3, "test-pool")
    inside = threading.Semaphore(0)
    release = threading.Event()
    names: list[str] = []

    def task() -> None:
        names.append(threading.current_thread().name)
        inside.release()
        release.wait(HOLD)

    try:
        for _ in range(5):
            assert pool.submit(task, lambda: None)
        for _ in range(3):  # three run at once: one per thread
            assert inside.acquire(timeout=BOUND)
        assert not inside.acquire(timeout=0.2)  # the other two wait for a thread
        release.set()
        for _ in range(2):
            assert inside.acquire(timeout=BOUND)
    finally:
        release.set()
        pool.stop()
    assert len(set(names)) == 3 and all(n.startswith("test-pool_") for n in names), names


def test_stop_drops_what_is_queued_and_refuses_more() -> None:
    pool = CallbackPool(1, "test-pool")
    started, release = threading.Event(), threading.Event()
    ran: list[int] = []
    dropped: list[int] = []
    all_done = threading.Semaphore(0)

    def blocker() -> None:
        started.set()
        release.wait(HOLD)
        all_done.release()

    def task(n: int) -> None:
        ran.append(n)
        all_done.release()

    def drop(n: int) -> None:
        dropped.append(n)
        all_done.release()

    assert pool.submit(blocker, lambda: None)
    assert started.wait(BOUND)
    for n in range(3):
        assert pool.submit(lambda n=n: task(n), lambda n=n: drop(n))
    pool.stop()
    pool.stop()  # a second stop changes nothing
    release.set()
    for _ in range(4):
        assert all_done.acquire(timeout=BOUND)
    assert (ran, dropped) == ([], [0, 1, 2])
    assert not pool.submit(lambda: task(9), lambda: drop(9))
    assert not all_done.acquire(timeout=0.2)  # refused: neither ran nor dropped


def test_a_task_that_raises_is_logged_and_the_thread_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = CallbackPool(1, "test-pool")
    after = threading.Event()

    def boom() -> None:
        raise RuntimeError("bug in a task")

    try:
        with caplog.at_level(logging.ERROR, logger="paynotify_client.pool"):
            assert pool.submit(boom, lambda: None)
            assert pool.submit(after.set, lambda: None)
            assert after.wait(BOUND)
    finally:
        pool.stop()
    assert any("a task raised" in r.getMessage() for r in caplog.records)


def test_threads_start_only_when_no_thread_is_waiting() -> None:
    pool = CallbackPool(8, "test-pool")
    done = threading.Semaphore(0)
    try:
        for _ in range(20):  # one at a time: the one thread is back waiting before the next
            assert pool.submit(done.release, lambda: None)
            assert done.acquire(timeout=BOUND)
            deadline = time.monotonic() + BOUND
            while pool._waiting == 0 and time.monotonic() < deadline:
                time.sleep(0.001)
        assert pool.threads == 1
    finally:
        pool.stop()


def test_a_pool_needs_a_thread() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        CallbackPool(0, "test-pool")
