"""In-process wake-ups: publish waiters per notification, dispatch loops per group.

Only wake-ups: every waiter also polls the store, so a lost signal delays but never loses work.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from paynotify_hub.domain import GroupDelivery
from paynotify_hub.member import Member

__all__ = ["GroupWakeups", "SettleSignals", "SettleWatch"]


class SettleWatch:
    """One publish's view of its notification: `event` fires on news; `known` holds the states
    this hub itself just gave deliveries (an ack the store confirmed is ACKED, no need to read
    it back); `unexplained` is set by news that carried no state (another hub's event, a nack,
    a released lease): only a store read tells what changed."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.known: dict[str, GroupDelivery] = {}
        self.unexplained = False


class SettleSignals:
    """Publish calls waiting for a notification's deliveries to settle."""

    def __init__(self) -> None:
        self._watches: defaultdict[int, set[SettleWatch]] = defaultdict(set)

    @contextmanager
    def watch(self, notification_id: int) -> Iterator[SettleWatch]:
        watch = SettleWatch()
        self._watches[notification_id].add(watch)
        try:
            yield watch
        finally:
            waiting = self._watches.get(notification_id)
            if waiting is not None:
                waiting.discard(watch)
                if not waiting:
                    del self._watches[notification_id]

    def notify(
        self, notification_id: int, group: str | None = None, delivery: GroupDelivery | None = None
    ) -> None:
        """News of `notification_id`: with `group` and `delivery`, that group's delivery is now
        `delivery` (as the store confirmed); without, something changed."""
        for watch in self._watches.get(notification_id, ()):
            if group is not None and delivery is not None:
                watch.known[group] = delivery
            else:
                watch.unexplained = True
            watch.event.set()

    def notify_all(self) -> None:
        for watches in self._watches.values():
            for watch in watches:
                watch.unexplained = True
                watch.event.set()

    def __len__(self) -> int:
        return sum(len(watches) for watches in self._watches.values())


class GroupWakeups:
    """The members connected to this hub, by group."""

    def __init__(self) -> None:
        self._members: defaultdict[str, set[Member]] = defaultdict(set)

    def add(self, member: Member) -> None:
        self._members[member.group].add(member)

    def remove(self, member: Member) -> None:
        members = self._members.get(member.group)
        if members is not None:
            members.discard(member)
            if not members:
                del self._members[member.group]

    def wake(self, groups: Iterable[str], *, due_now: bool = False) -> None:
        """Wake the members of `groups` (`due_now`: see `Member.wake`)."""
        for member in self.of(groups):
            member.wake(due_now=due_now)

    def of(self, groups: Iterable[str]) -> Iterator[Member]:
        """The members of `groups` connected now."""
        for group in groups:
            yield from self._members.get(group, ())

    def members(self) -> list[Member]:
        return [m for members in self._members.values() for m in members]

    def count(self, group: str) -> int:
        return len(self._members.get(group, ()))
