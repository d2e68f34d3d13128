"""The hub's domain: publish, members and their dispatch loops, acks, housekeeping. No gRPC here.

broker = Broker(config, store)          # store already opened
await broker.start()
result = await broker.publish(notification, receipt, max_wait=2.0)
member = await broker.open_member("billing", "billing-1")
leases = await member.next_batch()
await broker.ack(member, format_delivery_id(lease.notification_id, lease.token))
await broker.close_member(member)       # its leases become deliverable again
await broker.shutdown(drain=5.0); await broker.close()
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Sequence

from paynotify_hub.actions import Actions
from paynotify_hub.background import Housekeeper
from paynotify_hub.config import HubConfig
from paynotify_hub.dispatch import Dispatcher
from paynotify_hub.domain import GROUP_NAME_PATTERN, ActionStatus, NewNotification, ReceiptRecord
from paynotify_hub.errors import InvalidArgument, NotFound, ShuttingDown, StoreDown
from paynotify_hub.member import Member, MemberSettings
from paynotify_hub.metrics import HubMetrics
from paynotify_hub.publishing import Publisher, PublishResult
from paynotify_hub.signals import GroupWakeups, SettleSignals
from paynotify_hub.store.base import Store, StoreEvent
from paynotify_hub.storecall import store_call

__all__ = ["Broker"]

logger = logging.getLogger(__name__)

_MAX_CLIENT_ID = 64
_UNSAFE_IN_CLIENT_ID = re.compile(r"[/\x00-\x1f\x7f]")


def _default_hub_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _default_suffix() -> str:
    return secrets.token_hex(4)


class Broker:
    """Delivers stored notifications to group members and answers publishers.

    `clock` gives the store's notion of now (seconds since the epoch); `new_suffix` makes member ids
    unique per stream. Both are injectable for tests.
    """

    def __init__(
        self,
        config: HubConfig,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        metrics: HubMetrics | None = None,
        new_suffix: Callable[[], str] = _default_suffix,
    ) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics if metrics is not None else HubMetrics()
        self._clock = clock
        self._new_suffix = new_suffix
        self._hub_id = config.hub_id or _default_hub_id()
        self._stopping = False
        self._ended = False
        self._settles = SettleSignals()
        self._wakeups = GroupWakeups()
        self._tasks: dict[Member, asyncio.Task[None]] = {}
        self._end_listeners: set[Callable[[], None]] = set()
        self._background: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dispatcher = Dispatcher(store, config, self.metrics, clock)
        self._housekeeper = Housekeeper(store, config, self.metrics, clock, self.wake_groups)
        self._publisher = Publisher(
            store,
            config,
            self.metrics,
            self._settles,
            self._wakeups,
            lambda: self._ended,
            self._kick_groups,
        )
        self._actions = Actions(store, config, self.metrics, clock, self._settles, self._wakeups)

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def hub_id(self) -> str:
        """The prefix of this hub's member ids: unique among hubs sharing a store."""
        return self._hub_id

    def connected_members(self) -> list[Member]:
        """The streams open on this hub now (for status pages; read, do not change)."""
        return self._wakeups.members()

    def on_end(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener()` once the hub has ended its streams (publish streams end then too);
        returns the function that removes it."""
        self._end_listeners.add(listener)
        return lambda: self._end_listeners.discard(listener)

    def observe_acks(self, observer: Callable[[str, float], None]) -> None:
        """Call `observer(group, first_received_at)` for every ack that lands on this hub."""
        self._actions.on_ack = observer

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to other hubs' events and start the reaper and the purger."""
        self._loop = asyncio.get_running_loop()
        try:
            await store_call(
                "listen",
                self.store.listen(self._on_store_event),
                self.config.store_timeout * 2,
                self.metrics,
            )
        except StoreDown as exc:  # events only wake; polling keeps the hub correct without them
            logger.warning("not listening for other hubs' events: %s", exc)
        self._background = [
            asyncio.create_task(self._housekeeper.reap_forever(), name="hub-reaper"),
            asyncio.create_task(self._housekeeper.purge_forever(), name="hub-purger"),
        ]

    async def shutdown(self, drain: float) -> None:
        """Stop handing out work, let acks land for up to `drain` seconds, then end every stream.

        New publishes and members get ShuttingDown at once; waiting publishes go on waiting
        through the drain (an ack landing settles them), then get ShuttingDown too.
        """
        self._stopping = True
        members = self._wakeups.members()
        for member in members:
            member.dispatching = False
            member.wake()
        await asyncio.gather(*(m.wait_drained(drain) for m in members))
        for member in self._wakeups.members():
            member.end()
        self._end()

    def _end(self) -> None:
        self._ended = True
        self._settles.notify_all()
        for listener in list(self._end_listeners):
            listener()

    async def close(self) -> None:
        """Stop the background loops and release the leases of members still open."""
        self._stopping = True
        self._end()
        self._housekeeper.stop()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background = []
        for member in self._wakeups.members():
            await self.close_member(member)

    # -- publish ---------------------------------------------------------------------------------

    async def publish(
        self, notification: NewNotification, receipt: ReceiptRecord, max_wait: float
    ) -> PublishResult:
        """Store once, then wait up to `max_wait` seconds for every required group to settle it."""
        if self._stopping:
            raise ShuttingDown("hub shutting down, publish to another hub or retry")
        return await self._publisher.publish(notification, receipt, max_wait)

    # -- members ---------------------------------------------------------------------------------

    async def open_member(
        self,
        group: str,
        client_id: str,
        max_in_flight: int = 0,
        ack_deadline: float | None = None,
        notify_types: Iterable[str] = (),
    ) -> Member:
        """A new stream of `group`; 0 / None settings take the hub's defaults, others clamped."""
        if self._stopping:
            raise ShuttingDown("hub shutting down, reconnect")
        settings = self._settings(group, client_id, max_in_flight, ack_deadline, notify_types)
        member_id = f"{self._hub_id}/{settings.client_id}/{self._new_suffix()}"
        member = Member(member_id, settings)
        self._wakeups.add(member)
        self._tasks[member] = asyncio.create_task(
            self._dispatcher.run(member), name=f"dispatch {member_id}"
        )
        self.metrics.members.labels(group).inc()
        logger.info("member %s joined group %s", member_id, group, extra={"group": group})
        return member

    async def close_member(self, member: Member) -> None:
        """The stream ended: stop its dispatch loop and make its leases deliverable again."""
        task = self._tasks.pop(member, None)
        if task is None:
            return
        member.end()
        self._wakeups.remove(member)
        self.metrics.members.labels(member.group).dec()
        try:
            await asyncio.wait_for(task, self.config.store_timeout)
        except TimeoutError:
            logger.warning("dispatch loop of %s did not stop in time", member.id)
        await self._release(member)

    async def _release(self, member: Member) -> None:
        try:
            released = await store_call(
                "release",
                self.store.release(member.group, member.id, self._clock(), self.config.retry),
                self.config.store_timeout,
                self.metrics,
            )
        except StoreDown as exc:  # the leases expire on their own
            logger.warning("leases of %s not released: %s", member.id, exc)
            return
        logger.info(
            "member %s left group %s, %d leases released", member.id, member.group, released
        )
        if released:
            self.wake_groups([member.group])
            self._settles.notify_all()  # out of attempts: dead letters settle publishes

    def _settings(
        self,
        group: str,
        client_id: str,
        max_in_flight: int,
        ack_deadline: float | None,
        notify_types: Iterable[str],
    ) -> MemberSettings:
        if not GROUP_NAME_PATTERN.match(group):
            raise InvalidArgument(f"invalid group name {group!r}: use [a-z0-9][a-z0-9._-]{{0,62}}")
        spec = self.config.group(group)
        if spec is None:
            declared = ", ".join(g.name for g in self.config.groups)
            raise NotFound(f"group {group!r} is not declared on this hub (declared: {declared})")
        if max_in_flight < 0:
            raise InvalidArgument("max_in_flight must not be negative")
        if ack_deadline is not None and ack_deadline < 0:
            raise InvalidArgument("ack_deadline must not be negative")
        cfg = self.config
        limit = min(max_in_flight or cfg.default_max_in_flight, cfg.max_max_in_flight)
        deadline = ack_deadline or cfg.default_ack_deadline
        deadline = min(max(deadline, cfg.min_ack_deadline), cfg.max_ack_deadline)
        # '/' separates a member id's parts; a control character (NUL: PostgreSQL text cannot
        # hold it) would make every claim of this member fail.
        name = _UNSAFE_IN_CLIENT_ID.sub("_", (client_id.strip() or "anonymous")[:_MAX_CLIENT_ID])
        return MemberSettings(spec, name, limit, deadline, frozenset(notify_types))

    # -- actions ---------------------------------------------------------------------------------

    async def ack(self, member: Member, delivery_id: str) -> ActionStatus:
        return await self._actions.ack(member, delivery_id)

    async def ack_many(self, member: Member, delivery_ids: Sequence[str]) -> list[ActionStatus]:
        """The acks of one request, in one store call: an answer for each, in order."""
        return await self._actions.ack_many(member, delivery_ids)

    async def nack(self, member: Member, delivery_id: str, delay: float | None) -> ActionStatus:
        """Redeliver after `delay` seconds (None: the retry policy's backoff)."""
        return await self._actions.nack(member, delivery_id, delay)

    async def reject(self, member: Member, delivery_id: str, reason: str) -> ActionStatus:
        return await self._actions.reject(member, delivery_id, reason)

    async def extend(self, member: Member, delivery_id: str, seconds: float | None) -> ActionStatus:
        """The lease ends `seconds` from now (None: the member's ack deadline)."""
        return await self._actions.extend(member, delivery_id, seconds)

    # -- wake-ups --------------------------------------------------------------------------------

    def wake_groups(self, groups: Iterable[str]) -> None:
        self._wakeups.wake(groups)

    def _kick_groups(self, groups: Iterable[str]) -> None:
        """New work for `groups` is queued in the store: idle members claim right behind it."""
        for member in self._wakeups.of(groups):
            self._dispatcher.kick(member)

    def _on_store_event(self, event: StoreEvent) -> None:
        """Called by the store, maybe from another thread: hop onto the loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._apply_store_event, event)

    def _apply_store_event(self, event: StoreEvent) -> None:
        self._wakeups.wake(event.groups)
        if event.notification_id is not None:
            self._settles.notify(event.notification_id)
