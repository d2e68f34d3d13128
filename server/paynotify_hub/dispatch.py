"""The dispatch loop of one member: claim what it has room for, hand it out, wait for news.

Notifications wake, polling guarantees: the loop waits for `Member.wake()` (a local append, a nack,
an expired or released lease, another hub's event) but never longer than the poll interval or the
time until the group's next delivery falls due. It asks the store when that is only when something
may have gone into a backoff since it last asked, or when a claim found nothing due.

`kick()`: on a store that runs verbs in call order (SQLite), a local append submits the claim of
each idle member right behind itself, so the worker commits both in one transaction: one commit
and one hop fewer per notification than claiming once woken.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from paynotify_hub.config import HubConfig
from paynotify_hub.domain import Lease
from paynotify_hub.errors import StoreDown
from paynotify_hub.member import Member
from paynotify_hub.metrics import HubMetrics
from paynotify_hub.store.base import Store
from paynotify_hub.storecall import store_call

__all__ = ["Dispatcher"]

logger = logging.getLogger(__name__)

# Never spin faster than this when the store says work is due but none could be claimed.
_MIN_WAIT = 0.02


@dataclass
class Dispatcher:
    store: Store
    config: HubConfig
    metrics: HubMetrics
    clock: Callable[[], float]

    async def run(self, member: Member) -> None:
        """Until the member stops dispatching; store failures back off and retry, never raise."""
        failures = 0
        try:
            while member.dispatching:
                kicked = member.begin_step()
                try:
                    wait = await self._step(member, kicked)
                    failures = 0
                except StoreDown as exc:
                    failures += 1
                    wait = self._backoff(failures)
                    logger.warning(
                        "dispatch to %s paused %.1fs: %s",
                        member.id,
                        wait,
                        exc,
                        extra=_extra(member),
                    )
                if wait > 0:
                    member.idle = True
                    try:
                        await member.wait_for_news(wait)
                    finally:
                        member.idle = False
        finally:
            # A claim kicked as the stream ended: nobody awaits it; its leases are released
            # with the member (the release runs after it).
            if member.kicked is not None:
                _, claim = member.kicked
                member.kicked = None
                if isinstance(claim, asyncio.Future):
                    claim.add_done_callback(_retrieve)
                elif inspect.iscoroutine(claim):
                    claim.close()  # never started: nothing was queued

    def kick(self, member: Member) -> None:
        """Work for the member's group was just queued in the store, behind everything called
        before: if the loop is idle, submit its claim now (queued behind the append on SQLite),
        then wake it."""
        if member.idle and member.kicked is None and member.dispatching:
            slots = member.free_slots()
            if slots > 0:
                member.kick(slots, self._claim(member, slots))
                return
        member.wake(due_now=True)

    def _claim(self, member: Member, slots: int) -> Awaitable[list[Lease]]:
        settings = member.settings
        return self.store.claim(
            member.group,
            member.id,
            slots,
            settings.ack_deadline,
            settings.notify_types,
            self.clock(),
        )

    async def _step(
        self, member: Member, kicked: tuple[int, Awaitable[list[Lease]]] | None
    ) -> float:
        """Claim once (the kicked claim, if any); returns how long to wait before the next
        claim (0: go on at once)."""
        if kicked is not None:
            slots, claim = kicked
        else:
            slots = member.free_slots()
            if slots <= 0:
                return self.config.poll_interval  # an action on this stream wakes it sooner
            claim = self._claim(member, slots)
        leases = await store_call("claim", claim, self.config.store_timeout, self.metrics)
        if not member.dispatching:
            return 0.0  # the stream is closing: its leases are released with it
        if leases:
            member.hand_out(leases)
            deliveries = self.metrics.deliveries.labels(member.group)
            deliveries.inc(len(leases))
            redelivered = sum(1 for lease in leases if lease.attempt > 1)
            if redelivered:
                self.metrics.redeliveries.labels(member.group).inc(redelivered)
            if len(leases) == slots:
                return 0.0  # maybe more is due: claim again at once
            due_at, now = member.due_at, self.clock()
            if not member.maybe_delayed and (due_at is None or due_at > now):
                # Nothing more was due and nothing can have gone into a backoff since the last
                # look: wait for news, the backoff known from then, or the safety poll, without
                # asking the store.
                return self.config.poll_interval if due_at is None else self._clamp(due_at - now)
        # Nothing was due (a notification received at a time ahead of this hub's clock, a row
        # another hub holds locked), work may wait for a backoff, or a known one ended: ask when
        # next.
        member.maybe_delayed = False
        return await self._until_due(member)

    async def _until_due(self, member: Member) -> float:
        due = await store_call(
            "next_due",
            self.store.next_due(member.group, member.settings.notify_types),
            self.config.store_timeout,
            self.metrics,
        )
        member.due_at = due
        if due is None:
            return self.config.poll_interval
        return self._clamp(due - self.clock())

    def _clamp(self, seconds: float) -> float:
        poll = self.config.poll_interval
        return max(min(_MIN_WAIT, poll), min(seconds, poll))

    def _backoff(self, failures: int) -> float:
        return float(min(self.config.poll_interval * 2 ** min(failures - 1, 5), 30.0))


def _retrieve(claim: asyncio.Future[list[Lease]]) -> None:
    """Take an abandoned claim's outcome, so a failure is not reported as never retrieved."""
    if not claim.cancelled():
        claim.exception()


def _extra(member: Member) -> dict[str, str]:
    return {"group": member.group, "member_id": member.id}
