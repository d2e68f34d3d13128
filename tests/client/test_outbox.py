"""Queued actions become batched SubscribeRequests; an ended stream's outbox drops them."""

from __future__ import annotations

import threading

from paynotify.v1 import hub_pb2
from paynotify_client import Ack, Extend, Nack, Reject
from paynotify_client.actions import build_request
from paynotify_client.outbox import Outbox


def _open() -> hub_pb2.SubscribeRequest:
    request = hub_pb2.SubscribeRequest()
    request.open.group = "billing"
    return request


def test_build_request_batches_every_kind() -> None:
    request = build_request(
        [
            Ack("a"),
            Nack("b", 1.5),
            Nack("c"),
            Reject("d", "bad amount"),
            Extend("e", 60),
            Extend("f"),
        ]
    )
    assert list(request.ack_ids) == ["a"]
    assert [n.delivery_id for n in request.nacks] == ["b", "c"]
    assert request.nacks[0].delay.ToNanoseconds() == 1_500_000_000
    assert not request.nacks[1].HasField("delay")
    assert (request.rejects[0].delivery_id, request.rejects[0].reason) == ("d", "bad amount")
    assert request.extensions[0].extension.seconds == 60
    assert not request.extensions[1].HasField("extension")
    assert not request.HasField("open")


def test_nack_with_zero_delay_is_sent_as_a_set_zero_duration() -> None:
    request = build_request([Nack("a", 0.0)])
    assert request.nacks[0].HasField("delay")
    assert request.nacks[0].delay.ToNanoseconds() == 0


def test_requests_open_first_then_everything_queued_in_one_request() -> None:
    outbox = Outbox(_open())
    requests = outbox.requests()
    assert next(requests).open.group == "billing"
    for n in range(5):
        outbox.put(Ack(f"d{n}"))
    outbox.put(Nack("d9", 2))
    batch = next(requests)
    assert list(batch.ack_ids) == ["d0", "d1", "d2", "d3", "d4"]
    assert batch.nacks[0].delivery_id == "d9"


def test_the_iterator_blocks_until_an_action_comes_and_ends_on_close() -> None:
    outbox = Outbox(_open())
    requests = outbox.requests()
    next(requests)
    received: list[hub_pb2.SubscribeRequest] = []
    reader = threading.Thread(target=lambda: received.extend(requests))
    reader.start()
    outbox.put(Ack("x"))
    outbox.close()
    reader.join(timeout=5)
    assert not reader.is_alive()
    assert [list(r.ack_ids) for r in received] == [["x"]]


def test_actions_after_close_are_dropped() -> None:
    outbox = Outbox(_open())
    assert outbox.close() == 0
    outbox.put(Ack("late"))
    assert outbox.closed
    assert [r.HasField("open") for r in outbox.requests()] == [True]


def test_close_reports_unanswered_actions_and_answers_release_waiters() -> None:
    outbox = Outbox(_open())
    outbox.put(Ack("a"))
    outbox.put(Ack("b"))
    assert not outbox.wait_answered(0.01)
    outbox.answered(1)
    assert not outbox.wait_answered(0.01)
    outbox.answered(1)
    assert outbox.wait_answered(0.01)
    outbox.put(Ack("c"))
    assert outbox.close() == 1


def test_an_extension_superseded_in_the_same_batch_is_not_sent() -> None:
    request = build_request([Extend("a", 5), Extend("a", 9), Extend("b"), Ack("a"), Extend("c")])
    assert list(request.ack_ids) == ["a"]
    assert [(e.delivery_id, e.extension.seconds) for e in request.extensions] == [
        ("b", 0),
        ("c", 0),
    ]


def test_superseded_actions_count_as_answered() -> None:
    outbox = Outbox(_open())
    requests = outbox.requests()
    next(requests)
    outbox.put(Extend("a", 5))
    outbox.put(Ack("a"))
    assert len(next(requests).ack_ids) == 1
    outbox.answered(1)
    assert outbox.wait_answered(0.01)
