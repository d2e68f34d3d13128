"""The Subscribe stream: open, errors, actions on unknown or stale ids; health, reflection."""

from __future__ import annotations

from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from paynotify.v1 import hub_pb2
from tests.hub.helpers import publish_pending
from tests.hubkit import open_request, raw_subscriber, running_hub

UNKNOWN = hub_pb2.ACTION_STATUS_UNKNOWN
STALE = hub_pb2.ACTION_STATUS_STALE
OK = hub_pb2.ACTION_STATUS_OK


async def test_first_request_must_be_open(tmp_path: Path) -> None:
    async with (
        running_hub(tmp_path) as hub,
        raw_subscriber(
            hub.address, first=hub_pb2.SubscribeRequest(ack_ids=["1.x"]), expect_open=False
        ) as sub,
    ):
        assert await sub.wait_closed() == grpc.StatusCode.INVALID_ARGUMENT
        assert "first request must carry open" in sub.details


async def test_undeclared_group_is_not_found(tmp_path: Path) -> None:
    async with (
        running_hub(tmp_path, groups=("billing",)) as hub,
        raw_subscriber(hub.address, "shipping", expect_open=False) as sub,
    ):
        assert await sub.wait_closed() == grpc.StatusCode.NOT_FOUND
        assert "shipping" in sub.details and "billing" in sub.details


async def test_invalid_group_name_is_invalid_argument(tmp_path: Path) -> None:
    async with (
        running_hub(tmp_path) as hub,
        raw_subscriber(hub.address, "Not A Group", expect_open=False) as sub,
    ):
        assert await sub.wait_closed() == grpc.StatusCode.INVALID_ARGUMENT


async def test_open_settings_are_defaulted_and_clamped(tmp_path: Path) -> None:
    async with running_hub(
        tmp_path, default_max_in_flight=7, max_max_in_flight=20, max_ack_deadline=60.0
    ) as hub:
        async with raw_subscriber(hub.address) as sub:
            assert sub.opened is not None
            assert sub.opened.group == "billing"
            assert sub.opened.max_in_flight == 7
            assert sub.opened.ack_deadline.seconds == 10  # FAST_SETTINGS default
            assert sub.opened.member_id.startswith("test-hub/test/")
        async with raw_subscriber(hub.address, max_in_flight=5000, ack_deadline=3600) as sub:
            assert sub.opened is not None
            assert sub.opened.max_in_flight == 20
            assert sub.opened.ack_deadline.seconds == 60


async def test_second_open_ends_the_stream(tmp_path: Path) -> None:
    async with running_hub(tmp_path) as hub, raw_subscriber(hub.address) as sub:
        await sub.send(open_request("billing"))
        assert await sub.wait_closed() == grpc.StatusCode.INVALID_ARGUMENT


async def test_unknown_malformed_and_stale_ids_are_answered_and_stream_keeps_working(
    tmp_path: Path,
) -> None:
    async with running_hub(tmp_path) as hub, raw_subscriber(hub.address) as sub:
        await publish_pending(hub.address, 1)
        [first] = await sub.receive(1)
        # The last: 19 digits above 2**63 - 1, an id SQLite cannot bind (once left unanswered).
        ids = ("garbage", "", "12.", ".abc", "999999.deadbeef", "9664321968244322304.0")
        results = await sub.ack(*ids)
        assert [r.status for r in results] == [UNKNOWN] * len(ids)
        assert [r.delivery_id for r in results] == list(ids)
        [nacked] = await sub.nack(first.delivery_id, delay=0)
        assert nacked.status == OK
        [second] = await sub.receive(1)
        stale = await sub.send(
            hub_pb2.SubscribeRequest(
                ack_ids=[first.delivery_id],
                nacks=[hub_pb2.Nack(delivery_id=first.delivery_id)],
                rejects=[hub_pb2.Reject(delivery_id=first.delivery_id, reason="x")],
                extensions=[hub_pb2.Extension(delivery_id=first.delivery_id)],
            ),
            expect=4,
        )
        assert [r.status for r in stale] == [STALE] * 4
        assert [r.kind for r in stale] == [1, 2, 3, 4]
        [ok] = await sub.ack(second.delivery_id)
        assert ok.status == OK
        [again] = await sub.ack(second.delivery_id)
        assert again.status == STALE
        assert not sub.closed


async def test_one_request_of_held_stale_and_malformed_acks_answers_each_in_order(
    tmp_path: Path,
) -> None:
    """The held leases go to the store in one call, the rest are looked up: every ack still
    gets its own answer, in the order sent."""
    async with running_hub(tmp_path) as hub, raw_subscriber(hub.address) as sub:
        await publish_pending(hub.address, 3)
        first, second, third = await sub.receive(3)
        [done] = await sub.ack(first.delivery_id)
        assert done.status == OK
        sent = [
            second.delivery_id,
            first.delivery_id,  # acked already: stale
            "garbage",
            third.delivery_id,
            second.delivery_id,  # twice in one request: the second is stale
            "999999.deadbeef",  # never issued
        ]
        results = await sub.ack(*sent)
        assert [r.delivery_id for r in results] == sent
        assert [r.status for r in results] == [OK, STALE, UNKNOWN, OK, STALE, UNKNOWN]


async def test_health_is_serving_and_reflection_lists_the_service(tmp_path: Path) -> None:
    async with running_hub(tmp_path) as hub, grpc.aio.insecure_channel(hub.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "paynotify.v1.NotificationHub"):
            response = await health.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=10
            )
            assert response.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        names = set()
        async for response in call:
            names |= {s.name for s in response.list_services_response.service}
        assert {"paynotify.v1.NotificationHub", "grpc.health.v1.Health"} <= names


async def test_health_is_not_serving_once_shutdown_begins(tmp_path: Path) -> None:
    async with running_hub(tmp_path) as hub, raw_subscriber(hub.address) as sub:
        await hub.hub.health.enter_graceful_shutdown()
        async with grpc.aio.insecure_channel(hub.address) as channel:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
            assert response.status == health_pb2.HealthCheckResponse.NOT_SERVING
        await hub.stop(grace=0.5)
        assert await sub.wait_closed() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in sub.details
