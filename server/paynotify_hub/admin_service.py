"""The gRPC face of the operator's tools (paynotify.v1.HubAdmin): converts, calls `Admin`, maps
errors. No authentication here: deployments put the service behind the admin credential
(interceptors), so the servicer stays free of it.

admin = add_admin_service(server, broker, clock=clock)   # in create_server, before start
admin.start()                                           # with the hub: refreshes the gauges
await admin.close()                                     # with the hub's stop
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import grpc

from paynotify.v1 import admin_pb2, admin_pb2_grpc
from paynotify_hub.admin import Admin, MembersOf, MemberView, NotADeadLetter, member_view
from paynotify_hub.admin_convert import (
    dead_letter_message,
    notification_detail,
    seconds_of_timestamp,
    status_response,
)
from paynotify_hub.admin_metrics import DEFAULT_REFRESH_INTERVAL, AdminMetrics
from paynotify_hub.admin_metrics import register as register_metrics
from paynotify_hub.broker import Broker
from paynotify_hub.errors import HubError, InvalidArgument
from paynotify_hub.status import status_code_for

__all__ = ["ADMIN_SERVICE_NAME", "AdminService", "HubAdminServicer", "add_admin_service"]

ADMIN_SERVICE_NAME: str = admin_pb2.DESCRIPTOR.services_by_name["HubAdmin"].full_name

Context = grpc.aio.ServicerContext[Any, Any]


async def _abort(context: Context, error: HubError) -> NoReturn:
    code = (
        grpc.StatusCode.FAILED_PRECONDITION
        if isinstance(error, NotADeadLetter)
        else status_code_for(error)
    )
    await context.abort(code, str(error))
    raise AssertionError("context.abort returned")  # pragma: no cover


class HubAdminServicer(admin_pb2_grpc.HubAdminServicer):
    """paynotify.v1.HubAdmin on an `Admin`."""

    def __init__(self, admin: Admin, hub_id: str) -> None:
        self._admin = admin
        self._hub_id = hub_id

    async def Status(
        self, request: admin_pb2.StatusRequest, context: Context
    ) -> admin_pb2.StatusResponse:
        try:
            now, groups = await self._admin.status(list(request.groups))
        except HubError as exc:
            await _abort(context, exc)
        return status_response(now, self._hub_id, groups)

    async def Show(
        self, request: admin_pb2.ShowRequest, context: Context
    ) -> admin_pb2.ShowResponse:
        try:
            records = await self._admin.show(request.id, request.limit)
        except HubError as exc:
            await _abort(context, exc)
        return admin_pb2.ShowResponse(notifications=[notification_detail(r) for r in records])

    async def ListDeadLetters(
        self, request: admin_pb2.ListDeadLettersRequest, context: Context
    ) -> admin_pb2.ListDeadLettersResponse:
        try:
            page = await self._admin.dead_letters(
                request.group, request.page_token, request.page_size
            )
        except HubError as exc:
            await _abort(context, exc)
        return admin_pb2.ListDeadLettersResponse(
            dead_letters=[dead_letter_message(d) for d in page.letters],
            next_page_token=page.next_token,
        )

    async def Replay(
        self, request: admin_pb2.ReplayRequest, context: Context
    ) -> admin_pb2.ReplayResponse:
        try:
            target = request.WhichOneof("target")
            if target == "notification_id":
                replayed = await self._admin.replay_one(request.group, request.notification_id)
            elif target == "since":
                since = seconds_of_timestamp(request.since)
                replayed = await self._admin.replay_since(request.group, since)
            else:
                raise InvalidArgument("replay needs a target: notification_id or since")
        except HubError as exc:
            await _abort(context, exc)
        return admin_pb2.ReplayResponse(replayed=replayed)


class AdminService:
    """The registered servicer and the admin gauges; `start()` / `close()` follow the hub's."""

    def __init__(self, servicer: HubAdminServicer, metrics: AdminMetrics) -> None:
        self.servicer = servicer
        self.metrics = metrics

    def start(self) -> None:
        self.metrics.start()

    async def close(self) -> None:
        await self.metrics.close()


def add_admin_service(
    server: grpc.aio.Server,
    broker: Broker,
    *,
    clock: Callable[[], float] = time.time,
    members: MembersOf | None = None,
    metrics_interval: float = DEFAULT_REFRESH_INTERVAL,
) -> AdminService:
    """Register paynotify.v1.HubAdmin on `server` (before it starts) for `broker`'s hub, and the
    admin gauges and histogram in the broker's metrics registry.

    `members` (group -> connected count and members) defaults to the broker's streams.
    """
    config = broker.config
    admin = Admin(
        broker.store,
        config,
        broker.metrics,
        members=members or _members_of(broker),
        on_work=broker.wake_groups,
        clock=clock,
    )
    servicer = HubAdminServicer(admin, broker.hub_id)
    admin_pb2_grpc.add_HubAdminServicer_to_server(servicer, server)
    metrics = register_metrics(
        broker.metrics.registry,
        broker.store,
        config.groups,
        clock=clock,
        interval=metrics_interval,
        store_timeout=config.store_timeout,
    )
    return AdminService(servicer, metrics)


def _members_of(broker: Broker) -> MembersOf:
    """The streams connected to this hub, by group."""

    def members(group: str) -> tuple[int, Sequence[MemberView]]:
        views = [member_view(m) for m in broker.connected_members() if m.group == group]
        return len(views), views

    return members
