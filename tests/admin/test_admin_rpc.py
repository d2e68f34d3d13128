"""paynotify.v1.HubAdmin against a real hub: status, show, dead letters, replay, and the gauges."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from paynotify.v1 import admin_pb2, admin_pb2_grpc, hub_pb2
from tests.admin.kit import admin_hub, admin_stub
from tests.hub.helpers import publish_pending
from tests.hubkit import make_notification, publish_async, raw_subscriber

OK = hub_pb2.ACTION_STATUS_OK
GROUPS = ("billing", "audit:best-effort")


async def rpc_error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value


def by_group(response: admin_pb2.StatusResponse) -> dict[str, admin_pb2.GroupStats]:
    return {g.group: g for g in response.groups}


async def wait_for_status(
    stub: admin_pb2_grpc.HubAdminAsyncStub,
    check: Callable[[dict[str, admin_pb2.GroupStats]], bool],
    within: float = 5.0,
) -> admin_pb2.StatusResponse:
    """Poll Status until `check(groups)` holds (members connect and leases land asynchronously)."""
    deadline = time.monotonic() + within
    while True:
        response = await stub.Status(admin_pb2.StatusRequest())
        if check(by_group(response)) or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.05)


async def test_status_counts_pending_in_flight_and_members(tmp_path: Path) -> None:
    async with admin_hub(tmp_path, GROUPS) as hub, admin_stub(hub.address) as stub:
        empty = by_group(await stub.Status(admin_pb2.StatusRequest()))
        assert list(empty) == ["billing", "audit"]
        assert (empty["billing"].required, empty["audit"].required) == (True, False)
        assert empty["billing"].pending == 0
        assert not empty["billing"].HasField("oldest_unacked_age")
        await publish_pending(hub.address, 3, deadline=0.5)
        async with raw_subscriber(hub.address, "billing", client_id="b-1", max_in_flight=1) as sub:
            await sub.receive(1)
            status = await wait_for_status(
                stub, lambda g: g["billing"].in_flight == 1 and g["billing"].connected_members == 1
            )
            billing, audit = by_group(status)["billing"], by_group(status)["audit"]
            assert (billing.pending, billing.in_flight, billing.dead_letters) == (2, 1, 0)
            assert billing.connected_members == 1
            assert audit.pending == 3 and audit.connected_members == 0
            assert billing.oldest_unacked_age.ToNanoseconds() > 0
            assert status.hub_id == "test-hub"
            if billing.members:  # listed when the broker can list its members
                [member] = billing.members
                assert member.client_id == "b-1" and member.in_flight == 1
                assert member.member_id.startswith("test-hub/b-1/")
        only = await stub.Status(admin_pb2.StatusRequest(groups=["audit"]))
        assert [g.group for g in only.groups] == ["audit"]


async def test_status_of_unknown_or_invalid_group(tmp_path: Path) -> None:
    async with admin_hub(tmp_path) as hub, admin_stub(hub.address) as stub:
        error = await rpc_error(stub.Status(admin_pb2.StatusRequest(groups=["nobody"])))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert "nobody" in (error.details() or "")
        error = await rpc_error(stub.Status(admin_pb2.StatusRequest(groups=["Bad Name"])))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_show_every_receipt_delivery_and_attempt(tmp_path: Path) -> None:
    async with admin_hub(tmp_path, GROUPS) as hub, admin_stub(hub.address) as stub:
        n = make_notification("2020SHOW0000000001")
        async with raw_subscriber(hub.address, "billing", client_id="b-1") as sub:
            publishing = asyncio.create_task(publish_async(hub.address, n, 5.0))
            [first] = await sub.receive(1)
            await sub.nack(first.delivery_id, delay=0.0)
            [second] = await sub.receive(1)
            [result] = await sub.ack(second.delivery_id)
            assert result.status == OK
            assert (await publishing).outcome == hub_pb2.PUBLISH_OUTCOME_ACKNOWLEDGED
            member_id = sub.member_id
        again = await publish_async(hub.address, n, 2.0)
        assert again.outcome == hub_pb2.PUBLISH_OUTCOME_ALREADY_ACKNOWLEDGED
        by_payment = await stub.Show(admin_pb2.ShowRequest(id="2020SHOW0000000001"))
        by_request = await stub.Show(admin_pb2.ShowRequest(id=n.payment_request_id))
        assert by_payment == by_request
        [detail] = by_payment.notifications
        assert detail.notification_id == first.notification_id
        assert detail.notification.payment_id == "2020SHOW0000000001"
        assert detail.notification.raw_json == n.raw_json
        assert detail.alipay_send_count == 2
        assert [r.client_id for r in detail.receipts] == ["SANDBOX_5Y3A2N2YEB3002022"] * 2
        deliveries = {d.group: d for d in detail.deliveries}
        billing = deliveries["billing"]
        assert billing.state == hub_pb2.DELIVERY_STATE_ACKED and billing.attempts == 2
        assert billing.acked_at.ToNanoseconds() > 0
        attempts = [(a.attempt, a.outcome, a.member_id) for a in billing.attempt_history]
        assert attempts == [
            (1, admin_pb2.HISTORY_KIND_NACKED, member_id),
            (2, admin_pb2.HISTORY_KIND_ACKED, member_id),
        ]
        assert billing.attempt_history[1].ended_at.ToNanoseconds() > 0
        assert [e.kind for e in billing.history] == [
            admin_pb2.HISTORY_KIND_LEASED,
            admin_pb2.HISTORY_KIND_NACKED,
            admin_pb2.HISTORY_KIND_LEASED,
            admin_pb2.HISTORY_KIND_ACKED,
        ]
        audit = deliveries["audit"]
        assert audit.state == hub_pb2.DELIVERY_STATE_PENDING and not audit.history
        assert audit.due_at.ToNanoseconds() > 0


async def test_show_nothing_or_nonsense(tmp_path: Path) -> None:
    async with admin_hub(tmp_path) as hub, admin_stub(hub.address) as stub:
        error = await rpc_error(stub.Show(admin_pb2.ShowRequest(id="2020NOPE")))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        error = await rpc_error(stub.Show(admin_pb2.ShowRequest(id="  ")))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_dead_letter_listed_then_replayed(tmp_path: Path) -> None:
    async with admin_hub(tmp_path) as hub, admin_stub(hub.address) as stub:
        [n] = await publish_pending(hub.address, 1, deadline=0.5)
        async with raw_subscriber(hub.address, "billing") as sub:
            [d] = await sub.receive(1)
            await sub.reject(d.delivery_id, "unknown order")
            listed = await stub.ListDeadLetters(admin_pb2.ListDeadLettersRequest())
            [letter] = listed.dead_letters
            assert (letter.notification_id, letter.group) == (d.notification_id, "billing")
            assert (letter.reason, letter.attempts) == ("unknown order", 1)
            assert letter.notification.payment_id == n.payment_id
            assert letter.notification.raw_json == n.raw_json
            assert listed.next_page_token == ""
            status = by_group(await stub.Status(admin_pb2.StatusRequest()))
            assert status["billing"].dead_letters == 1
            request = admin_pb2.ReplayRequest(group="billing", notification_id=d.notification_id)
            assert (await stub.Replay(request)).replayed == 1
            [again] = await sub.receive(1)
            assert (again.notification_id, again.attempt) == (d.notification_id, 1)
            error = await rpc_error(stub.Replay(request))  # leased now, not dead
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "not a dead letter" in (error.details() or "")
            await sub.ack(again.delivery_id)
        assert not (await stub.ListDeadLetters(admin_pb2.ListDeadLettersRequest())).dead_letters


async def test_replay_refusals(tmp_path: Path) -> None:
    async with admin_hub(tmp_path) as hub, admin_stub(hub.address) as stub:
        [_] = await publish_pending(hub.address, 1, deadline=0.5)
        cases = [
            (admin_pb2.ReplayRequest(group="billing"), grpc.StatusCode.INVALID_ARGUMENT),
            (
                admin_pb2.ReplayRequest(group="billing", notification_id="12x"),
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
            (
                admin_pb2.ReplayRequest(group="billing", notification_id="999"),
                grpc.StatusCode.NOT_FOUND,
            ),
            (
                admin_pb2.ReplayRequest(group="nobody", notification_id="1"),
                grpc.StatusCode.NOT_FOUND,
            ),
            (
                admin_pb2.ReplayRequest(group="billing", notification_id="1"),
                grpc.StatusCode.FAILED_PRECONDITION,  # pending, not dead
            ),
        ]
        for request, code in cases:
            assert (await rpc_error(stub.Replay(request))).code() == code, request


async def test_replay_a_group_since_a_time(tmp_path: Path) -> None:
    async with admin_hub(tmp_path) as hub, admin_stub(hub.address) as stub:
        before = Timestamp()
        before.GetCurrentTime()
        await publish_pending(hub.address, 3, deadline=0.5)
        async with raw_subscriber(hub.address, "billing") as sub:
            firsts = await sub.receive(3)
            await sub.ack(*(d.delivery_id for d in firsts))
            request = admin_pb2.ReplayRequest(group="billing", since=before)
            assert (await stub.Replay(request)).replayed == 3
            seconds = await sub.receive(3)
            assert {d.notification_id for d in seconds} == {d.notification_id for d in firsts}
            assert {d.attempt for d in seconds} == {1}
            await sub.ack(*(d.delivery_id for d in seconds))
        later = Timestamp()
        later.GetCurrentTime()
        later.seconds += 3600
        request = admin_pb2.ReplayRequest(group="billing", since=later)
        assert (await stub.Replay(request)).replayed == 0


async def test_dead_letter_pages(tmp_path: Path) -> None:
    async with admin_hub(tmp_path) as hub, admin_stub(hub.address) as stub:
        await publish_pending(hub.address, 3, deadline=0.5)
        async with raw_subscriber(hub.address, "billing") as sub:
            for d in await sub.receive(3):
                await sub.reject(d.delivery_id, f"bad {d.notification_id}")
        seen: list[str] = []
        token = ""
        for _ in range(3):
            page = await stub.ListDeadLetters(
                admin_pb2.ListDeadLettersRequest(page_size=2, page_token=token)
            )
            seen += [d.notification_id for d in page.dead_letters]
            token = page.next_page_token
            if not token:
                break
        assert len(seen) == 3 and len(set(seen)) == 3
        assert seen == sorted(seen, key=int)
        bad = admin_pb2.ListDeadLettersRequest(page_token="garbage")
        assert (await rpc_error(stub.ListDeadLetters(bad))).code() == (
            grpc.StatusCode.INVALID_ARGUMENT
        )
        other = await stub.ListDeadLetters(admin_pb2.ListDeadLettersRequest(group="audit"))
        assert not other.dead_letters


async def test_gauges_follow_the_store(tmp_path: Path) -> None:
    async with admin_hub(tmp_path, GROUPS) as hub:
        registry = hub.hub.metrics.registry

        def sample(name: str, group: str = "billing") -> float | None:
            return registry.get_sample_value(name, {"group": group})

        assert sample("paynotify_hub_group_required") == 1.0
        assert sample("paynotify_hub_group_required", "audit") == 0.0
        await publish_pending(hub.address, 2, deadline=0.5)
        async with raw_subscriber(hub.address, "billing", max_in_flight=1) as sub:
            [d] = await sub.receive(1)
            await sub.reject(d.delivery_id, "bad")
            [_] = await sub.receive(1)
            await hub.admin.metrics.refresh()
            assert sample("paynotify_hub_queue_depth") == 0.0
            assert sample("paynotify_hub_in_flight") == 1.0
            assert sample("paynotify_hub_dead_letters_stored") == 1.0
            assert sample("paynotify_hub_queue_depth", "audit") == 2.0
            assert sample("paynotify_hub_queue_due", "audit") == 2.0
            assert (sample("paynotify_hub_oldest_unacked_age_seconds", "audit") or 0) > 0
            refreshed = registry.get_sample_value(
                "paynotify_hub_group_stats_refreshed_timestamp_seconds"
            )
            assert refreshed is not None and abs(refreshed - time.time()) < 60
        hub.admin.metrics.observe_ack("billing", time.time() - 2.0, time.time())
        count = registry.get_sample_value(
            "paynotify_hub_ack_latency_seconds_count", {"group": "billing"}
        )
        assert count == 1.0


async def test_gauges_refresh_in_the_background(tmp_path: Path) -> None:
    async with admin_hub(tmp_path) as hub:
        registry = hub.hub.metrics.registry
        await publish_pending(hub.address, 1, deadline=0.5)
        deadline = time.monotonic() + 5
        while registry.get_sample_value("paynotify_hub_queue_depth", {"group": "billing"}) != 1.0:
            assert time.monotonic() < deadline, "the gauges were never refreshed"
            await asyncio.sleep(0.05)
