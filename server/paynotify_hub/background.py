"""The hub's periodic work: expiring leases and purging old settled notifications.

Each loop survives store failures: it logs, waits for its next tick, and tries again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from paynotify_hub.config import HubConfig
from paynotify_hub.errors import StoreDown
from paynotify_hub.metrics import HubMetrics
from paynotify_hub.store.base import Store
from paynotify_hub.storecall import store_call

__all__ = ["Housekeeper"]

logger = logging.getLogger(__name__)


@dataclass
class Housekeeper:
    store: Store
    config: HubConfig
    metrics: HubMetrics
    clock: Callable[[], float]
    # Called with the groups that got work back (expired leases).
    on_groups: Callable[[frozenset[str]], None]
    # Cleared by stop(): the loops end even if a cancellation was lost on the way.
    running: bool = True

    def stop(self) -> None:
        self.running = False

    async def reap_forever(self) -> None:
        """Expired leases become pending again (or dead when out of attempts)."""
        while self.running:
            await self._tick("expire_leases", self.reap_once)
            await asyncio.sleep(self.config.lease_check_interval)

    async def purge_forever(self) -> None:
        """Settled notifications older than the retention go away, in batches."""
        while self.running:
            await asyncio.sleep(self.config.purge_interval)
            await self._tick("purge_settled", self.purge_once)

    async def reap_once(self) -> None:
        groups = await store_call(
            "expire_leases",
            self.store.expire_leases(self.clock(), self.config.retry),
            self.config.store_timeout,
            self.metrics,
        )
        if groups:
            logger.debug("expired leases returned work to %s", sorted(groups))
            self.on_groups(groups)

    async def purge_once(self) -> int:
        before = self.clock() - self.config.retention
        total = 0
        while True:
            purged = await store_call(
                "purge_settled",
                self.store.purge_settled(before, self.config.purge_batch),
                self.config.store_timeout,
                self.metrics,
            )
            total += purged
            if purged < self.config.purge_batch:
                break
        if total:
            logger.info("purged %d settled notifications", total)
        return total

    async def _tick(self, name: str, work: Callable[[], Awaitable[object]]) -> None:
        try:
            await work()
        except StoreDown as exc:
            logger.warning("%s skipped: %s", name, exc)
        except Exception:
            logger.exception("%s failed; retrying on the next tick", name)
