"""How many store calls one notification costs: the hot path's shape, kept from regressing.

A notification published, delivered and acked with nothing else going on costs exactly an append,
a claim and an ack (`ack_many`, one call for a request's acks): the publish learns of the ack from
the hub itself (no group_states read back), the dispatch loop does not ask when work falls due when
nothing can be in a backoff, and a freed slot wakes the loop only when the member was full.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from paynotify.v1 import hub_pb2
from paynotify_hub.store.base import Store
from tests.hubkit import make_notification, publish_async, raw_subscriber, running_hub

VERBS = ("append", "claim", "ack", "ack_many", "nack", "group_states", "next_due", "release")
BOUND = 10.0


@contextmanager
def counted(store: Store) -> Iterator[Counter[str]]:
    """Count calls of the store's hot verbs (the real store still does the work)."""
    calls: Counter[str] = Counter()
    originals = {verb: getattr(store, verb) for verb in VERBS}

    def wrap(verb: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls[verb] += 1
            return method(*args, **kwargs)

        return call

    for verb, method in originals.items():
        setattr(store, verb, wrap(verb, method))
    try:
        yield calls
    finally:
        for verb in originals:
            delattr(store, verb)


async def test_one_notification_costs_an_append_a_claim_and_an_ack(tmp_path: Path) -> None:
    # A long safety poll: only the notifications themselves wake the dispatch loop.
    async with (
        running_hub(tmp_path, poll_interval=5.0) as hub,
        raw_subscriber(hub.address) as sub,
    ):
        await asyncio.sleep(0.2)  # the member's first look at the store is done
        with counted(hub.store) as calls:
            for i in range(5):
                pending = asyncio.create_task(
                    publish_async(hub.address, make_notification(f"C{i}"))
                )
                (delivery,) = await sub.receive(1)
                await sub.ack(delivery.delivery_id)
                async with asyncio.timeout(BOUND):
                    response = await pending
                assert response.outcome == hub_pb2.PUBLISH_OUTCOME_ACKNOWLEDGED
        # A request's acks go to the store as one call.
        assert calls["append"] == 5 and calls["ack_many"] == 5 and calls["ack"] == 0, calls
        assert calls["claim"] == 5, calls
        assert calls["group_states"] == 0, calls
        assert calls["next_due"] == 0, calls


async def test_a_repeat_of_an_acknowledged_notification_is_answered_from_its_append(
    tmp_path: Path,
) -> None:
    """Alipay's retry of what is acked: no read back of the group states, no delivery again;
    at most the idle member's claim kicked behind the append, which finds nothing."""
    async with (
        running_hub(tmp_path, poll_interval=5.0) as hub,
        raw_subscriber(hub.address) as sub,
    ):
        notification = make_notification("D1")
        pending = asyncio.create_task(publish_async(hub.address, notification))
        (delivery,) = await sub.receive(1)
        await sub.ack(delivery.delivery_id)
        async with asyncio.timeout(BOUND):
            assert (await pending).outcome == hub_pb2.PUBLISH_OUTCOME_ACKNOWLEDGED
        await asyncio.sleep(0.2)  # the loop is idle again
        with counted(hub.store) as calls:
            for _ in range(3):
                response = await publish_async(hub.address, notification)
                assert response.outcome == hub_pb2.PUBLISH_OUTCOME_ALREADY_ACKNOWLEDGED
            await sub.receive_none(within=0.3)
        assert calls["append"] == 3 and calls["claim"] <= 3, calls
        assert calls["group_states"] == 0, calls


async def test_a_nack_with_a_delay_is_redelivered_when_due(tmp_path: Path) -> None:
    """The other side of skipping next_due: after a nack the loop asks again and wakes in time."""
    async with running_hub(tmp_path, poll_interval=5.0) as hub, raw_subscriber(hub.address) as sub:
        pending = asyncio.create_task(publish_async(hub.address, make_notification("N1")))
        (first,) = await sub.receive(1)
        loop = asyncio.get_running_loop()
        nacked_at = loop.time()
        await sub.nack(first.delivery_id, delay=0.3)
        (second,) = await sub.receive(1)
        # Well before the 5 s safety poll: the loop asked when the nacked delivery falls due.
        assert loop.time() - nacked_at < 2.5
        assert second.attempt == 2
        await sub.ack(second.delivery_id)
        async with asyncio.timeout(BOUND):
            assert (await pending).outcome == hub_pb2.PUBLISH_OUTCOME_ACKNOWLEDGED


async def test_a_new_publish_during_a_backoff_does_not_make_the_loop_forget_it(
    tmp_path: Path,
) -> None:
    """The loop learnt when the nacked delivery falls due; a publish waking it meanwhile (a claim
    that finds only the new one) must not trade that due time for the 5 s safety poll."""
    async with running_hub(tmp_path, poll_interval=5.0) as hub, raw_subscriber(hub.address) as sub:
        first_publish = asyncio.create_task(
            publish_async(hub.address, make_notification("N1"), timeout=20)
        )
        (first,) = await sub.receive(1)
        loop = asyncio.get_running_loop()
        nacked_at = loop.time()
        await sub.nack(first.delivery_id, delay=0.3)
        await asyncio.sleep(0.1)
        second_publish = asyncio.create_task(
            publish_async(hub.address, make_notification("N2"), timeout=20)
        )
        (other,) = await sub.receive(1)
        assert other.notification.payment_id == "N2"
        (again,) = await sub.receive(1, timeout=10)
        assert again.notification.payment_id == "N1" and again.attempt == 2
        assert loop.time() - nacked_at < 2.5  # due at 0.3 s; the safety poll is at 5 s
        await sub.ack(other.delivery_id, again.delivery_id)
        async with asyncio.timeout(BOUND):
            for publish in (first_publish, second_publish):
                assert (await publish).outcome == hub_pb2.PUBLISH_OUTCOME_ACKNOWLEDGED
