"""Helpers for the client's integration tests: a recording callback, quick subscriber settings."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from paynotify_client import Backoff, FlowControl, Message, Subscriber

# Reconnect fast: tests wait tenths of seconds, not the production seconds.
FAST_BACKOFF = Backoff(initial=0.05, maximum=0.5)


def subscriber(address: str, group: str = "billing", **kwargs: Any) -> Subscriber:
    """A Subscriber with test-friendly reconnect backoff."""
    kwargs.setdefault("backoff", FAST_BACKOFF)
    kwargs.setdefault("flow_control", FlowControl(max_in_flight=8))
    return Subscriber(address, group, client_id=kwargs.pop("client_id", "client-test"), **kwargs)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.01)


class Recorder:
    """A callback that records each message and settles it with `settle(message)` (ack default)."""

    def __init__(self, settle: Callable[[Message], object] = Message.ack) -> None:
        self._settle = settle
        self._lock = threading.Lock()
        self.messages: list[Message] = []
        self.times: list[float] = []

    def __call__(self, message: Message) -> None:
        with self._lock:
            self.messages.append(message)
            self.times.append(time.monotonic())
        self._settle(message)

    @property
    def attempts(self) -> list[int]:
        with self._lock:
            return [m.attempt for m in self.messages]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Message]:
        wait_until(lambda: len(self.messages) >= count, timeout, f"{count} deliveries")
        with self._lock:
            return list(self.messages)
