"""Tokens per role against a real hub: who may Publish, Subscribe to which group, call HubAdmin."""

from __future__ import annotations

import asyncio
import logging
import queue
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from paynotify.v1 import admin_pb2, admin_pb2_grpc, hub_pb2, hub_pb2_grpc
from paynotify_client import Message, Subscriber, SubscriberAuthError
from paynotify_hub.auth import AuthInterceptor
from paynotify_hub.tokens import TokenTable
from tests.hubkit import (
    RunningHub,
    aio_channel,
    bearer,
    hub_in_thread,
    make_notification,
    publish,
    publish_async,
    raw_subscriber,
    running_hub,
)
from tests.security.conftest import GROUPS, WRONG_TOKEN, Tokens

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture
async def hub(tmp_path: Path, tokens: Tokens) -> AsyncIterator[RunningHub]:
    async with running_hub(tmp_path, GROUPS, tokens=tokens.table()) as running:
        yield running


async def _publish(hub: RunningHub, token: str | None) -> tuple[grpc.StatusCode, str]:
    try:
        await publish_async(hub.address, make_notification(), timeout=1.0, token=token)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


async def _subscribe(hub: RunningHub, group: str, token: str | None) -> tuple[Any, str]:
    async with raw_subscriber(hub.address, group, token=token, expect_open=False) as sub:
        if sub.opened is not None:
            return grpc.StatusCode.OK, ""
        return await sub.wait_closed(), sub.details


async def _status(hub: RunningHub, token: str | None) -> tuple[grpc.StatusCode, str]:
    async with aio_channel(hub.address) as channel:
        stub = admin_pb2_grpc.HubAdminStub(channel)
        try:
            await stub.Status(admin_pb2.StatusRequest(), timeout=5, metadata=bearer(token))
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


async def test_publish_needs_the_publisher_token(hub: RunningHub, tokens: Tokens) -> None:
    assert await _publish(hub, tokens.publisher) == (grpc.StatusCode.OK, "")
    code, details = await _publish(hub, None)
    assert code == UNAUTHENTICATED and "missing token" in details
    assert (await _publish(hub, WRONG_TOKEN))[0] == UNAUTHENTICATED
    for other in (tokens.billing, tokens.admin):
        code, details = await _publish(hub, other)
        assert code == PERMISSION_DENIED and "not allowed to call" in details


async def test_a_token_must_come_as_bearer(hub: RunningHub, tokens: Tokens) -> None:
    async with aio_channel(hub.address) as channel:
        stub = hub_pb2_grpc.NotificationHubStub(channel)
        request = hub_pb2.PublishRequest(notification=make_notification())
        for metadata in (
            (("authorization", f"Basic {tokens.publisher}"),),
            (("authorization", tokens.publisher),),
            (("authorization", "Bearer "),),
            (("authorization", f"Bearer {tokens.publisher}"), ("authorization", "Bearer x")),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Publish(request, timeout=2, metadata=metadata)
            assert caught.value.code() == UNAUTHENTICATED


async def test_subscribe_needs_the_token_of_the_group(hub: RunningHub, tokens: Tokens) -> None:
    assert await _subscribe(hub, "billing", tokens.billing) == (grpc.StatusCode.OK, "")
    assert await _subscribe(hub, "audit", tokens.audit) == (grpc.StatusCode.OK, "")
    assert (await _subscribe(hub, "billing", None))[0] == UNAUTHENTICATED
    assert (await _subscribe(hub, "billing", WRONG_TOKEN))[0] == UNAUTHENTICATED
    code, details = await _subscribe(hub, "billing", tokens.publisher)
    assert code == PERMISSION_DENIED and "not allowed to call" in details
    assert (await _subscribe(hub, "billing", tokens.admin))[0] == PERMISSION_DENIED
    code, details = await _subscribe(hub, "audit", tokens.billing)
    assert code == PERMISSION_DENIED
    assert details == "token not allowed for group 'audit'"


async def test_a_refused_subscription_opens_no_member(hub: RunningHub, tokens: Tokens) -> None:
    await _subscribe(hub, "audit", tokens.billing)
    registry = hub.hub.metrics.registry
    assert not registry.get_sample_value("paynotify_hub_members", {"group": "audit"})


async def test_a_stream_without_open_is_still_the_servicers_to_refuse(
    hub: RunningHub, tokens: Tokens
) -> None:
    first = hub_pb2.SubscribeRequest(ack_ids=["x"])
    async with raw_subscriber(
        hub.address, first=first, token=tokens.billing, expect_open=False
    ) as sub:
        assert await sub.wait_closed() == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_authorized_subscriber_receives_and_acks(hub: RunningHub, tokens: Tokens) -> None:
    async with raw_subscriber(hub.address, "billing", token=tokens.billing) as sub:
        await publish_async(hub.address, make_notification(), timeout=0.5, token=tokens.publisher)
        [delivery] = await sub.receive(1)
        [result] = await sub.ack(delivery.delivery_id)
        assert result.status == hub_pb2.ACTION_STATUS_OK


async def test_a_dropped_authorized_stream_releases_its_member_and_leases(
    hub: RunningHub, tokens: Tokens
) -> None:
    """The group check wraps the servicer's stream: a drop must still reach its cleanup."""
    registry = hub.hub.metrics.registry
    async with raw_subscriber(hub.address, "billing", token=tokens.billing) as sub:
        await publish_async(hub.address, make_notification(), timeout=0.3, token=tokens.publisher)
        [first] = await sub.receive(1)
        assert registry.get_sample_value("paynotify_hub_members", {"group": "billing"}) == 1
    deadline = asyncio.get_running_loop().time() + 5
    while registry.get_sample_value("paynotify_hub_members", {"group": "billing"}):
        assert asyncio.get_running_loop().time() < deadline, "the member was never released"
        await asyncio.sleep(0.05)
    async with raw_subscriber(hub.address, "billing", token=tokens.billing) as sub:
        [again] = await sub.receive(1)
        assert (again.notification_id, again.attempt) == (first.notification_id, 2)


async def test_admin_rpcs_need_the_admin_token(hub: RunningHub, tokens: Tokens) -> None:
    assert await _status(hub, tokens.admin) == (grpc.StatusCode.OK, "")
    assert (await _status(hub, None))[0] == UNAUTHENTICATED
    assert (await _status(hub, WRONG_TOKEN))[0] == UNAUTHENTICATED
    for other in (tokens.publisher, tokens.billing):
        assert (await _status(hub, other))[0] == PERMISSION_DENIED


async def test_health_and_reflection_stay_open(hub: RunningHub) -> None:
    async with aio_channel(hub.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        response = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
        call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {s.name async for r in call for s in r.list_services_response.service}
        assert {"paynotify.v1.NotificationHub", "paynotify.v1.HubAdmin"} <= names


async def test_refusals_are_counted_and_logged_without_the_token(
    hub: RunningHub, tokens: Tokens, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        await _publish(hub, WRONG_TOKEN)
        await _publish(hub, tokens.billing)
        await _subscribe(hub, "audit", tokens.billing)
    registry = hub.hub.metrics.registry
    publish = "/paynotify.v1.NotificationHub/Publish"
    labels = {"method": publish, "code": "UNAUTHENTICATED"}
    assert registry.get_sample_value("paynotify_hub_auth_refusals_total", labels) == 1
    labels = {"method": publish, "code": "PERMISSION_DENIED"}
    assert registry.get_sample_value("paynotify_hub_auth_refusals_total", labels) == 1
    assert "refused /paynotify.v1.NotificationHub/Subscribe from" in caplog.text
    for secret in (WRONG_TOKEN, *tokens.all()):
        assert secret not in caplog.text


def test_the_client_library_reports_a_refused_token(tmp_path: Path, tokens: Tokens) -> None:
    with hub_in_thread(tmp_path, GROUPS, tokens=tokens.table()) as hub:
        for token in (None, WRONG_TOKEN, tokens.audit):
            with Subscriber(hub.address, "billing", token=token) as subscriber:
                future = subscriber.subscribe(lambda message: message.ack())
                with pytest.raises(SubscriberAuthError):
                    future.result(timeout=10)


def test_the_client_library_with_its_group_token_acks(tmp_path: Path, tokens: Tokens) -> None:
    received: queue.Queue[Message] = queue.Queue()

    def handle(message: Message) -> None:
        message.ack()
        received.put(message)

    with (
        hub_in_thread(tmp_path, GROUPS, tokens=tokens.table()) as hub,
        Subscriber(hub.address, "billing", token=tokens.billing) as subscriber,
    ):
        subscriber.subscribe(handle)
        response = publish(hub.address, make_notification(), timeout=10, token=tokens.publisher)
        assert response.outcome == hub_pb2.PUBLISH_OUTCOME_ACKNOWLEDGED
        assert received.get(timeout=5).attempt == 1


# -- no token configured ------------------------------------------------------------------------


async def test_without_tokens_everything_is_open_on_loopback(tmp_path: Path) -> None:
    async with running_hub(tmp_path) as hub:
        assert await _publish(hub, None) == (grpc.StatusCode.OK, "")
        assert await _status(hub, None) == (grpc.StatusCode.OK, "")
        # A token sent to an open hub is not checked.
        assert await _publish(hub, WRONG_TOKEN) == (grpc.StatusCode.OK, "")


async def test_without_tokens_admin_is_refused_beyond_loopback() -> None:
    """The policy for a hub listening beyond loopback without tokens, checked on a loopback
    server (tests do not bind public addresses): admin refused, the rest open."""
    server = grpc.aio.server(interceptors=[AuthInterceptor(TokenTable(), admin_open=False)])
    admin_pb2_grpc.add_HubAdminServicer_to_server(admin_pb2_grpc.HubAdminServicer(), server)
    hub_pb2_grpc.add_NotificationHubServicer_to_server(
        hub_pb2_grpc.NotificationHubServicer(), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with aio_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await admin_pb2_grpc.HubAdminStub(channel).Status(admin_pb2.StatusRequest())
            assert caught.value.code() == PERMISSION_DENIED
            assert "configure --admin-token-file" in (caught.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await hub_pb2_grpc.NotificationHubStub(channel).Publish(hub_pb2.PublishRequest())
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED  # reached the servicer
    finally:
        await server.stop(None)
