"""The handle `Subscriber.subscribe()` returns: running until closed or stopped by an error."""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Callable

__all__ = ["SubscribeFuture"]


class SubscribeFuture:
    """Tracks a running subscription, like Pub/Sub's StreamingPullFuture.

    `result()` blocks until the subscription stops: it returns None after `cancel()` or
    `Subscriber.close()`, and raises a `SubscriberError` when the hub ended the stream with a status
    retrying cannot fix (a retryable error never reaches it: the Subscriber reconnects).
    """

    def __init__(self, on_cancel: Callable[[], None]) -> None:
        self._future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._on_cancel = on_cancel

    def running(self) -> bool:
        """Whether the subscription is still receiving (or reconnecting)."""
        return not self._future.done()

    def done(self) -> bool:
        """Whether the subscription has stopped."""
        return self._future.done()

    def cancel(self) -> bool:
        """Start a graceful close in the background (see `Subscriber.close`) and return at once;
        `result()` returns once it is complete. False if the subscription had already stopped.
        """
        if self._future.done():
            return False
        self._on_cancel()
        return True

    def result(self, timeout: float | None = None) -> None:
        """Wait until the subscription stops; raise its `SubscriberError`, or `TimeoutError`."""
        self._future.result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait until the subscription stops; the error that stopped it, or None."""
        return self._future.exception(timeout)

    def add_done_callback(self, fn: Callable[[SubscribeFuture], object]) -> None:
        """Call `fn(self)` once the subscription stops (at once if it has)."""
        self._future.add_done_callback(lambda _: fn(self))

    def _set_result(self) -> None:
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            self._future.set_result(None)

    def _set_exception(self, error: BaseException) -> None:
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            self._future.set_exception(error)
