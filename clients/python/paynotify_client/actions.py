"""What a Message asks of the hub, and how queued asks become one SubscribeRequest."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from google.protobuf import duration_pb2

from paynotify.v1 import hub_pb2

__all__ = [
    "Ack",
    "Action",
    "ActionSink",
    "Extend",
    "Nack",
    "Reject",
    "action_count",
    "build_request",
]


@dataclass(frozen=True)
class Ack:
    """Done: the hub stops redelivering it and counts it for Publish."""

    delivery_id: str


@dataclass(frozen=True)
class Nack:
    """Not now: redeliver after `delay` seconds (None: the hub's backoff for the attempt)."""

    delivery_id: str
    delay: float | None = None


@dataclass(frozen=True)
class Reject:
    """Never: park it as a dead letter with its payload and `reason`; counts as settled."""

    delivery_id: str
    reason: str


@dataclass(frozen=True)
class Extend:
    """Still working: the lease now ends `seconds` from now (None: the stream's ack deadline)."""

    delivery_id: str
    seconds: float | None = None


Action = Ack | Nack | Reject | Extend

# Where a Message puts its actions; it must only enqueue, never block on the network.
ActionSink = Callable[[Action], None]


def _duration(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(round(max(seconds, 0.0) * 1e9))
    return duration


def _add(request: hub_pb2.SubscribeRequest, action: Action) -> None:
    if isinstance(action, Ack):
        request.ack_ids.append(action.delivery_id)
    elif isinstance(action, Nack):
        nack = request.nacks.add(delivery_id=action.delivery_id)
        if action.delay is not None:
            nack.delay.CopyFrom(_duration(action.delay))
    elif isinstance(action, Reject):
        request.rejects.add(delivery_id=action.delivery_id, reason=action.reason)
    else:
        extension = request.extensions.add(delivery_id=action.delivery_id)
        if action.seconds is not None:
            extension.extension.CopyFrom(_duration(action.seconds))


def _moot_extensions(actions: list[Action]) -> set[int]:
    """Positions of extensions that a later action in the batch makes pointless: the hub handles
    settlements before extensions, so an extension sent with its delivery's settlement would only
    be answered STALE, and of several extensions of one delivery the last one counts.
    """
    later: set[str] = set()
    moot: set[int] = set()
    for index in range(len(actions) - 1, -1, -1):
        action = actions[index]
        if isinstance(action, Extend) and action.delivery_id in later:
            moot.add(index)
        later.add(action.delivery_id)
    return moot


def build_request(actions: Iterable[Action]) -> hub_pb2.SubscribeRequest:
    """One SubscribeRequest carrying the actions, in order within each kind, without the
    extensions a later action of the same delivery in the batch supersedes.
    """
    batch = list(actions)
    moot = _moot_extensions(batch)
    request = hub_pb2.SubscribeRequest()
    for index, action in enumerate(batch):
        if index not in moot:
            _add(request, action)
    return request


def action_count(request: hub_pb2.SubscribeRequest) -> int:
    """How many actions the request carries (the hub answers each with one ActionResult)."""
    return (
        len(request.ack_ids) + len(request.nacks) + len(request.rejects) + len(request.extensions)
    )
