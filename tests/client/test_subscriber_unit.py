"""Subscriber settings checked before any connection is made."""

from __future__ import annotations

import pytest

from paynotify.v1 import notification_pb2
from paynotify_client import FlowControl, Subscriber, SubscriberStateError
from paynotify_client.subscriber import notify_type_value


@pytest.mark.parametrize("group", ["", "Billing", "-x", "a" * 64, "bad group"])
def test_invalid_group_names_are_refused_at_once(group: str) -> None:
    with pytest.raises(ValueError):
        Subscriber("127.0.0.1:1", group)


def test_ack_deadline_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Subscriber("127.0.0.1:1", "billing", ack_deadline=0)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("PAYMENT_RESULT", notification_pb2.NOTIFY_TYPE_PAYMENT_RESULT),
        ("offline_payment_code", notification_pb2.NOTIFY_TYPE_OFFLINE_PAYMENT_CODE),
        ("NOTIFY_TYPE_PAYMENT_PENDING", notification_pb2.NOTIFY_TYPE_PAYMENT_PENDING),
        (1, notification_pb2.NOTIFY_TYPE_PAYMENT_RESULT),
    ],
)
def test_notify_types_by_name_or_number(given: str | int, expected: int) -> None:
    assert notify_type_value(given) == expected


@pytest.mark.parametrize("given", ["REFUND_RESULT", "UNSPECIFIED", 0, 99])
def test_unknown_notify_types_are_refused(given: str | int) -> None:
    with pytest.raises(ValueError):
        Subscriber("127.0.0.1:1", "billing", notify_types=[given])


def test_the_open_request_carries_the_settings() -> None:
    subscriber = Subscriber(
        "127.0.0.1:1",
        "billing",
        client_id="billing-7f9c",
        flow_control=FlowControl(max_in_flight=4),
        ack_deadline=12.5,
        notify_types=["PAYMENT_RESULT"],
    )
    open_ = subscriber._open.open
    assert (open_.group, open_.client_id, open_.max_in_flight) == ("billing", "billing-7f9c", 4)
    assert open_.ack_deadline.ToNanoseconds() == 12_500_000_000
    assert list(open_.notify_types) == [notification_pb2.NOTIFY_TYPE_PAYMENT_RESULT]


def test_client_id_defaults_to_host_and_pid() -> None:
    assert Subscriber("127.0.0.1:1", "billing").client_id


def test_token_becomes_bearer_metadata() -> None:
    subscriber = Subscriber("127.0.0.1:1", "billing", token="s3cret")
    assert subscriber._metadata == (("authorization", "Bearer s3cret"),)
    assert "s3cret" not in repr(subscriber)


def test_close_without_subscribe_is_fine_and_final() -> None:
    subscriber = Subscriber("127.0.0.1:1", "billing")
    subscriber.close()
    subscriber.close()
    with pytest.raises(SubscriberStateError):
        subscriber.subscribe(lambda m: None)


def test_one_subscription_per_subscriber() -> None:
    with Subscriber("127.0.0.1:1", "billing") as subscriber:
        future = subscriber.subscribe(lambda m: None)
        with pytest.raises(SubscriberStateError):
            subscriber.subscribe(lambda m: None)
        assert future.running()
    assert future.done()
    future.result(timeout=0)  # closed by us: no error
