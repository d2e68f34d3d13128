"""The operator's tools, domain side: status, show, dead letters, replay. No gRPC here.

admin = Admin(store, config, metrics, members=..., on_work=broker.wake_groups)
now, groups = await admin.status([])              # every declared group
records = await admin.show("2024...", limit=0)     # by paymentId or paymentRequestId
page = await admin.dead_letters("billing", "", 50)  # page.next_token for the next page
await admin.replay_one("billing", "42")            # one dead letter
await admin.replay_since("billing", since)         # a whole group from a point in time

Errors are the hub's (`paynotify_hub.errors`) plus `NotADeadLetter`; store failures and timeouts
surface as `StoreDown`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from paynotify_hub.config import HubConfig
from paynotify_hub.domain import (
    GROUP_NAME_PATTERN,
    ActionStatus,
    DeadLetter,
    DeliveryEvent,
    DeliveryState,
    GroupSpec,
    GroupStats,
    HistoryKind,
    NotificationRecord,
)
from paynotify_hub.errors import HubError, InvalidArgument, NotFound
from paynotify_hub.member import Member
from paynotify_hub.metrics import HubMetrics
from paynotify_hub.store.base import Store
from paynotify_hub.storecall import store_call

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "DEFAULT_SHOW_LIMIT",
    "MAX_PAGE_SIZE",
    "MAX_SHOW_LIMIT",
    "Admin",
    "Attempt",
    "DeadLetterPage",
    "GroupStatus",
    "MemberView",
    "MembersOf",
    "NotADeadLetter",
    "attempts_of",
    "member_view",
    "page_token_of",
    "parse_page_token",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_SHOW_LIMIT = 20
MAX_SHOW_LIMIT = 100
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
_MAX_KEY_CHARS = 256


class NotADeadLetter(HubError):
    """Replay of one delivery refused: it is not dead (pending, in flight or acknowledged)."""


@dataclass(frozen=True)
class MemberView:
    """A connected stream, as status shows it."""

    member_id: str
    group: str
    client_id: str
    in_flight: int
    max_in_flight: int
    ack_deadline: float


def member_view(member: Member) -> MemberView:
    s = member.settings
    return MemberView(
        member.id, member.group, s.client_id, member.in_flight, s.max_in_flight, s.ack_deadline
    )


# group -> (how many streams are connected, those that can be listed: maybe none).
MembersOf = Callable[[str], tuple[int, Sequence[MemberView]]]


@dataclass(frozen=True)
class GroupStatus:
    spec: GroupSpec
    stats: GroupStats
    connected: int
    members: tuple[MemberView, ...] = ()


@dataclass(frozen=True)
class Attempt:
    """One lease of a delivery and how it ended (`outcome` None: still held)."""

    attempt: int
    member: str
    leased_at: float | None
    lease_expires_at: float | None
    outcome: HistoryKind | None = None
    ended_at: float | None = None
    state_after: DeliveryState = DeliveryState.LEASED
    detail: str = ""

    @property
    def duration(self) -> float | None:
        if self.ended_at is None or self.leased_at is None:
            return None
        return max(0.0, self.ended_at - self.leased_at)


def attempts_of(history: Iterable[DeliveryEvent]) -> list[Attempt]:
    """Pair each LEASED event with the end that follows it (one group's history, oldest first).

    An end without its lease (history written before this version) still makes an attempt, with
    no lease time. REPLAYED events start no attempt.
    """
    attempts: list[Attempt] = []
    open_lease: DeliveryEvent | None = None
    for event in history:
        if event.kind is HistoryKind.LEASED:
            if open_lease is not None:  # its end was never written: show it as still open
                attempts.append(_attempt(open_lease, None))
            open_lease = event
        elif event.kind.ends_attempt:
            attempts.append(_attempt(open_lease, event))
            open_lease = None
    if open_lease is not None:
        attempts.append(_attempt(open_lease, None))
    return attempts


def _attempt(lease: DeliveryEvent | None, end: DeliveryEvent | None) -> Attempt:
    if end is None:
        assert lease is not None
        return Attempt(lease.attempt, lease.member, lease.at, lease.lease_expires_at)
    return Attempt(
        attempt=end.attempt,
        member=end.member or (lease.member if lease else ""),
        leased_at=lease.at if lease else None,
        lease_expires_at=lease.lease_expires_at if lease else None,
        outcome=end.kind,
        ended_at=end.at,
        state_after=end.state,
        detail=end.detail,
    )


@dataclass(frozen=True)
class DeadLetterPage:
    letters: list[DeadLetter]
    # Empty on the last page.
    next_token: str = ""


def page_token_of(letter: DeadLetter) -> str:
    return f"{letter.notification_id}/{letter.group}"


def parse_page_token(token: str) -> tuple[int, str]:
    if not token:
        return 0, ""
    head, sep, group = token.partition("/")
    if not sep or not head.isascii() or not head.isdigit() or not GROUP_NAME_PATTERN.match(group):
        raise InvalidArgument("invalid page token: pass next_page_token of the previous page")
    return int(head), group


def _notification_id(text: str) -> int:
    text = text.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise InvalidArgument(f"invalid notification id {text!r}: the hub's ids are digits")
    return int(text)


class Admin:
    """Reads and repairs the store for an operator. `on_work` is told the groups a replay gave
    work, so local dispatch loops wake at once (other hubs learn it from the store)."""

    def __init__(
        self,
        store: Store,
        config: HubConfig,
        metrics: HubMetrics,
        *,
        members: MembersOf,
        on_work: Callable[[Iterable[str]], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._config = config
        self._metrics = metrics
        self._members = members
        self._on_work = on_work
        self._clock = clock

    async def status(self, groups: Sequence[str]) -> tuple[float, list[GroupStatus]]:
        """The hub's now and each named group's status (none named: every declared group)."""
        specs = [self._declared(g) for g in groups] if groups else list(self._config.groups)
        now = self._clock()
        names = [spec.name for spec in specs]
        stats = await self._call("group_stats", self._store.group_stats(now, names))
        return now, [self._status_of(spec, s) for spec, s in zip(specs, stats, strict=True)]

    async def show(self, key: str, limit: int) -> list[NotificationRecord]:
        key = key.strip()
        if not key or len(key) > _MAX_KEY_CHARS:
            raise InvalidArgument("give a paymentId or paymentRequestId (at most 256 characters)")
        limit = min(limit or DEFAULT_SHOW_LIMIT, MAX_SHOW_LIMIT)
        records = await self._call("find_notifications", self._store.find_notifications(key, limit))
        if not records:
            raise NotFound(f"no notification has paymentId or paymentRequestId {key!r}")
        return records

    async def dead_letters(self, group: str, page_token: str, page_size: int) -> DeadLetterPage:
        if group and not GROUP_NAME_PATTERN.match(group):
            raise InvalidArgument(f"invalid group name {group!r}")
        after_id, after_group = parse_page_token(page_token)
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        letters = await self._call(
            "dead_letters",
            self._store.dead_letters(group or None, after_id, size + 1, after_group=after_group),
        )
        if len(letters) <= size:
            return DeadLetterPage(letters)
        return DeadLetterPage(letters[:size], page_token_of(letters[size - 1]))

    async def replay_one(self, group: str, notification_id: str) -> int:
        """Replay one dead letter; returns 1. NotFound / NotADeadLetter when it cannot."""
        spec = self._declared(group)
        nid = _notification_id(notification_id)
        status = await self._call("replay", self._store.replay(spec.name, nid, self._clock()))
        if status is ActionStatus.UNKNOWN:
            raise NotFound(f"group {group!r} has no delivery of notification {nid}")
        if status is ActionStatus.STALE:
            states = await self._call("group_states", self._store.group_states(nid))
            state = states[group].state.value if group in states else "gone"
            raise NotADeadLetter(
                f"notification {nid} is not a dead letter of group {group!r} (it is {state})"
            )
        logger.warning(
            "operator replayed dead letter %d of group %s", nid, group, extra={"group": group}
        )
        self._on_work([spec.name])
        return 1

    async def replay_since(self, group: str, since: float) -> int:
        """Replay every notification of `group` first received at or after `since`."""
        spec = self._declared(group)
        if not math.isfinite(since):
            raise InvalidArgument("since must be a finite point in time")
        count = await self._call(
            "replay_since", self._store.replay_since(spec.name, since, self._clock())
        )
        logger.warning(
            "operator replayed %d notifications of group %s first received since %.3f",
            count,
            group,
            since,
            extra={"group": group},
        )
        if count:
            self._on_work([spec.name])
        return count

    def _declared(self, group: str) -> GroupSpec:
        if not GROUP_NAME_PATTERN.match(group):
            raise InvalidArgument(f"invalid group name {group!r}")
        spec = self._config.group(group)
        if spec is None:
            declared = ", ".join(g.name for g in self._config.groups)
            raise NotFound(f"group {group!r} is not declared on this hub (declared: {declared})")
        return spec

    def _status_of(self, spec: GroupSpec, stats: GroupStats) -> GroupStatus:
        count, members = self._members(spec.name)
        return GroupStatus(spec, stats, count, tuple(sorted(members, key=lambda m: m.member_id)))

    async def _call(self, operation: str, call: Awaitable[T]) -> T:
        """Bounded by the hub's store timeout; failures become StoreDown (UNAVAILABLE)."""
        return await store_call(operation, call, self._config.store_timeout, self._metrics)
