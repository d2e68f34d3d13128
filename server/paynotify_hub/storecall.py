"""Calling the store from the broker: bounded in time, its failures turned into `StoreDown`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

from paynotify_hub.errors import StoreDown
from paynotify_hub.metrics import HubMetrics
from paynotify_hub.store.base import StoreError

__all__ = ["store_call"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


async def store_call(operation: str, call: Awaitable[T], seconds: float, metrics: HubMetrics) -> T:
    """Await `call` for at most `seconds`; StoreError or running out of time raise StoreDown."""
    try:
        # Not asyncio.wait_for: on Python 3.11 it can swallow a cancellation that arrives as the
        # call completes (CPython gh-86296), and a loop that should stop would run on forever.
        async with asyncio.timeout(seconds):
            return await call
    except TimeoutError:
        metrics.store_errors.labels(operation).inc()
        raise StoreDown(f"store did not answer {operation} within {seconds:g}s") from None
    except StoreError as exc:
        metrics.store_errors.labels(operation).inc()
        raise StoreDown(f"store failed during {operation}: {exc}") from exc
