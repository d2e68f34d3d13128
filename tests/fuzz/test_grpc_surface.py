"""The hub's gRPC surface under bad input: a real grpc.aio hub (tests/hubkit.py) on SQLite (and,
for the store-dependent cases, on PostgreSQL when PAYNOTIFY_TEST_POSTGRES_DSN reaches one).

Each bad request must get a precise status code (INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED,
UNIMPLEMENTED) or a precise answer inside the protocol (Publish REJECTED, ActionResult
UNKNOWN/STALE), never UNKNOWN/INTERNAL or UNAVAILABLE for a property of the request itself;
nothing is stored from a rejected Publish; the hub serves on afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import DecodeError
from hypothesis import assume, given
from hypothesis import strategies as st

from paynotify.v1 import hub_pb2
from paynotify.v1.hub_pb2_grpc import NotificationHubStub
from paynotify_hub.convert import MAX_ID_CHARS
from paynotify_hub.domain import GROUP_NAME_PATTERN
from paynotify_hub.member import parse_delivery_id
from tests.fuzz.figures import FIGURES, fuzz_settings
from tests.fuzz.grpckit import hub_on, publish_request, raw_stream, raw_unary, stored
from tests.hubkit import (
    RawSubscriber,
    ThreadedHub,
    hub_in_thread,
    make_notification,
    open_request,
    publish,
    publish_async,
    raw_subscriber,
)

OK = grpc.StatusCode.OK
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
REJECTED = hub_pb2.PUBLISH_OUTCOME_REJECTED
ACKNOWLEDGED = hub_pb2.PUBLISH_OUTCOME_ACKNOWLEDGED
ALREADY = hub_pb2.PUBLISH_OUTCOME_ALREADY_ACKNOWLEDGED
UNKNOWN = hub_pb2.ACTION_STATUS_UNKNOWN
STALE = hub_pb2.ACTION_STATUS_STALE
ACTION_OK = hub_pb2.ACTION_STATUS_OK

MAX_MESSAGE = 64 * 1024
MAX_NOTIFICATION = 8 * 1024
DEFAULT_IN_FLIGHT, MAX_IN_FLIGHT = 64, 1000
MIN_DEADLINE, DEFAULT_DEADLINE, MAX_DEADLINE = 0.1, 10.0, 600.0
# "billing" is best-effort, so an accepted Publish is answered at once; "quiet" only wants a
# type nobody publishes here, so a stream on it never gets a delivery.
GROUPS = (
    "billing:best-effort",
    "audit:best-effort",
    "quiet:best-effort:REFUND_RESULT",
    "calm:best-effort:REFUND_RESULT",
)
DECLARED = ("billing", "audit", "quiet", "calm")
# Groups the Subscribe property opens: never a delivery there, so only its own actions answer
# (billing and audit hold a backlog from the Publish properties).
QUIET = ("quiet", "calm")
SOON = 10.0


def tried(outcome: str) -> None:
    FIGURES.tried("grpc", outcome)


def failed_status(what: str, code: grpc.StatusCode, details: str) -> None:
    """Count an imprecise answer (UNKNOWN, UNAVAILABLE for a property of the request, ...)."""
    FIGURES.failed("crashes", f"{what}: {code.name} {details[:200]}")


class HubHandle:
    """The module's hub, with a short repr (hypothesis prints it with every failing example)."""

    def __init__(self, hub: ThreadedHub, channel: grpc.Channel) -> None:
        self.address = hub.address
        self.config = hub.config
        self.channel = channel  # reused by the properties: a channel per call costs ~30 ms

    def __repr__(self) -> str:
        return f"hub at {self.address}"


@pytest.fixture(scope="module")
def grpc_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubHandle]:
    """One hub for the properties of this module; it must still serve at the end."""
    with (
        hub_in_thread(
            tmp_path_factory.mktemp("grpc-fuzz"),
            groups=GROUPS,
            max_message_bytes=MAX_MESSAGE,
            max_notification_bytes=MAX_NOTIFICATION,
        ) as hub,
        grpc.insecure_channel(hub.address) as channel,
    ):
        yield HubHandle(hub, channel)
        assert_hub_serves(hub)


def assert_hub_serves(hub: Any) -> None:
    """A valid Publish is acknowledged, and a stream opens and receives deliveries."""
    response = publish(hub.address, make_notification(), timeout=SOON)
    assert response.outcome == ACKNOWLEDGED, response

    async def stream() -> None:
        # One at a time: a batch of the backlog may exceed the send limit (see the test below).
        async with raw_subscriber(hub.address, "audit", max_in_flight=1) as sub:
            assert sub.opened is not None
            await sub.receive(1)

    asyncio.run(stream())


# -- raw bytes -----------------------------------------------------------------------------------

VALID_PUBLISH = publish_request(make_notification("RAW-1"), "raw").SerializeToString()
VALID_OPEN = open_request("billing").SerializeToString()


def _mutated(data: bytes) -> st.SearchStrategy[bytes]:
    position = st.integers(0, len(data))
    return st.one_of(
        st.builds(lambda i: data[:i], position),
        st.builds(
            lambda i, b: data[:i] + bytes([b]) + data[i + 1 :], position, st.integers(0, 255)
        ),
        st.builds(lambda i, junk: data[:i] + junk + data[i:], position, st.binary(max_size=8)),
    )


request_bytes = st.one_of(
    st.binary(max_size=200), _mutated(VALID_PUBLISH), _mutated(VALID_OPEN), st.just(b"\xff" * 3)
)


def _decodes(message_type: Any, data: bytes) -> Any | None:
    try:
        return message_type.FromString(data)
    except DecodeError:
        return None


@fuzz_settings(150)
@given(method=st.sampled_from(["Publish", "Subscribe"]), data=request_bytes)
def test_random_request_bytes_are_answered_invalid_argument(
    grpc_hub: HubHandle, method: str, data: bytes
) -> None:
    """BUG: bytes that are not a valid protobuf message (wire format or UTF-8 of a string field)
    are answered UNKNOWN "Unexpected <class 'google.protobuf.message.DecodeError'>: ..." by
    grpc.aio's own deserialization. Expected: INVALID_ARGUMENT naming the message type."""
    before = stored(grpc_hub)
    if method == "Publish":
        code, details, reply = raw_unary(grpc_hub.channel, "Publish", data)
        decoded = _decodes(hub_pb2.PublishRequest, data)
        if decoded is not None and code == OK:
            assert reply is not None
            response = hub_pb2.PublishResponse.FromString(reply)
            if response.outcome == REJECTED:
                assert stored(grpc_hub) == before
            tried(f"Publish raw bytes: {hub_pb2.PublishOutcome.Name(response.outcome)}")
            return
    else:
        code, details, _ = raw_stream(grpc_hub.channel, [data])
        decoded = _decodes(hub_pb2.SubscribeRequest, data)
    tried(f"{method} raw bytes: {code.name}")
    assert stored(grpc_hub) == before
    if decoded is None:
        if code != INVALID_ARGUMENT:
            failed_status(f"{method} {data[:40]!r}", code, details)
        assert code == INVALID_ARGUMENT, (method, data, code, details)
    else:
        assert code in (OK, INVALID_ARGUMENT, NOT_FOUND), (method, data, code, details)


def test_unknown_methods_are_unimplemented(grpc_hub: HubHandle) -> None:
    for method in ("Nope", "publish", "Publish/extra", "Subscribe2"):
        code, _, _ = raw_unary(grpc_hub.channel, method, VALID_PUBLISH)
        tried(f"unknown method: {code.name}")
        assert code == grpc.StatusCode.UNIMPLEMENTED, method


# -- Publish -----------------------------------------------------------------------------------

_no_controls = st.characters(exclude_categories=["Cs", "Cc"])
ids = st.one_of(
    st.just(""),
    st.text(_no_controls, max_size=70),
    st.sampled_from(["x" * 64, "x" * 65, "é" * 64, "é" * 65, "P|1", " ", "2020\u202e01"]),
)
notify_types = st.one_of(
    st.sampled_from(["PAYMENT_RESULT", "OFFLINE_PAYMENT_CODE", "PAYMENT_PENDING", "P" * 65]), ids
)
receipt_texts = st.text(_no_controls, max_size=300)


@st.composite
def publish_requests(draw: st.DrawFn) -> hub_pb2.PublishRequest:
    request = hub_pb2.PublishRequest()
    if draw(st.integers(0, 9)) == 0:
        return request  # no notification at all
    n = request.notification
    n.notify_type_text = draw(notify_types)
    n.notify_type = cast(Any, draw(st.sampled_from([0, 1, 2, 3])))
    n.payment_id = draw(ids)
    n.payment_request_id = draw(ids)
    n.raw_json = draw(
        st.one_of(
            st.just(b""),
            st.binary(max_size=60),
            st.integers(MAX_NOTIFICATION - 300, MAX_NOTIFICATION + 50).map(lambda k: b"j" * k),
        )
    )
    if draw(st.booleans()):
        n.result.result_status = cast(Any, draw(st.sampled_from([0, 1, 2, 3])))
        n.result.result_code = draw(st.text(max_size=20))
    if draw(st.booleans()):
        n.payment_amount.value = draw(st.text(max_size=20))
        n.payment_amount.minor_units = draw(st.integers(-(2**63), 2**63 - 1))
    if draw(st.booleans()):
        r = request.receipt
        r.client_id, r.request_time, r.request_id = (draw(receipt_texts) for _ in range(3))
        r.received_at.seconds = draw(st.integers(-62135596800, 253402300799))
        r.received_at.nanos = draw(st.integers(0, 999_999_999))
    return request


def expected_rejection(request: hub_pb2.PublishRequest) -> str | None:
    """The documented reasons a Publish is REJECTED (convert.validate_publish's contract)."""
    if not request.HasField("notification"):
        return "notification is missing"
    n = request.notification
    if not n.notify_type_text:
        return "notify_type_text is empty"
    if not n.payment_id and not n.payment_request_id:
        return "neither payment_id nor payment_request_id"
    for name in ("payment_id", "payment_request_id", "notify_type_text"):
        if len(getattr(n, name)) > MAX_ID_CHARS:
            return f"{name} is longer than {MAX_ID_CHARS}"
    if not n.raw_json:
        return "raw_json is empty"
    if n.ByteSize() > MAX_NOTIFICATION:
        return "more than the limit"
    return None


@fuzz_settings(150)
@given(request=publish_requests())
def test_publish_answers_rejected_exactly_for_invalid_notifications(
    grpc_hub: HubHandle, request: hub_pb2.PublishRequest
) -> None:
    """Garbage, empty, oversized: REJECTED with a detail and nothing stored; anything valid is
    stored once per Alipay send and acknowledged (billing is best-effort here)."""
    before = stored(grpc_hub)
    code, details, reply = raw_unary(grpc_hub.channel, "Publish", request.SerializeToString())
    after = stored(grpc_hub)
    if code != OK:
        failed_status("Publish", code, details)
    assert code == OK, (code, details)
    assert reply is not None
    response = hub_pb2.PublishResponse.FromString(reply)
    reason = expected_rejection(request)
    tried(f"Publish: {hub_pb2.PublishOutcome.Name(response.outcome)}")
    if reason is not None:
        if after != before:
            FIGURES.failed("stored_from_rejected", f"Publish {reason}: {before} -> {after}")
        assert response.outcome == REJECTED and response.detail, (reason, response)
        assert reason.split()[0] in response.detail
        assert after == before and not response.notification_id
    else:
        assert response.outcome in (ACKNOWLEDGED, ALREADY), response
        assert after[1] == before[1] + 1 and response.notification_id


BROKEN_PUBLISHES: dict[str, tuple[str, Any]] = {
    "an unknown ResultStatus value": ("result_status", 7),
    "a negative ResultStatus value": ("result_status", -5),
    "received_at after year 9999": ("received_at", (253402300800, 0)),
    "received_at before year 1": ("received_at", (-62135596801, 0)),
    "received_at with negative nanos": ("received_at", (0, -5)),
    "received_at with nanos of 2**31-1": ("received_at", (0, 2**31 - 1)),
}


def test_publish_with_values_outside_their_type_is_rejected_not_a_crash(
    grpc_hub: HubHandle,
) -> None:
    """BUG: convert.new_notification calls ResultStatus.Name() and receipt_of calls
    Timestamp.ToNanoseconds(); both raise ValueError for values protobuf carries but cannot name
    or convert (an open enum's unknown value: a publisher on a newer proto; an out-of-range
    Timestamp), and the servicer answers UNKNOWN "Unexpected <class 'ValueError'>: ...".
    Expected: REJECTED with a detail naming the field, nothing stored."""
    wrong = {}
    for case, (field, value) in sorted(BROKEN_PUBLISHES.items()):
        request = publish_request(make_notification(), "broken")
        if field == "result_status":
            request.notification.result.result_status = value
        else:
            request.receipt.received_at.seconds, request.receipt.received_at.nanos = value
        before = stored(grpc_hub)
        code, details, reply = raw_unary(grpc_hub.channel, "Publish", request.SerializeToString())
        tried(f"Publish out of range: {code.name}")
        if code != OK:
            failed_status(f"Publish with {case}", code, details)
            wrong[case] = f"{code.name}: {details}"
        elif hub_pb2.PublishResponse.FromString(reply or b"").outcome != REJECTED:
            wrong[case] = "not REJECTED"
        assert stored(grpc_hub) == before
    assert not wrong, wrong


def test_messages_over_the_receive_limit_are_resource_exhausted(grpc_hub: HubHandle) -> None:
    n = make_notification()
    n.raw_json = b"x" * (MAX_MESSAGE + 10)
    request = publish_request(n, "big")
    before = stored(grpc_hub)
    code, _, _ = raw_unary(grpc_hub.address, "Publish", request.SerializeToString())
    tried(f"oversized Publish: {code.name}")
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    ack_flood = hub_pb2.SubscribeRequest(ack_ids=["1.x" * 8] * (MAX_MESSAGE // 20))
    code, _, _ = raw_stream(grpc_hub.address, [VALID_OPEN, ack_flood.SerializeToString()])
    tried(f"oversized Subscribe request: {code.name}")
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    code, _, _ = raw_stream(grpc_hub.address, [b"\x0a" + b"\xff" * (MAX_MESSAGE + 10)])
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stored(grpc_hub) == before
    assert_hub_serves(grpc_hub)


async def test_a_backlog_of_large_notifications_is_delivered_within_the_send_limit(
    tmp_path: Path,
) -> None:
    """BUG: the hub sends every lease the dispatcher claimed as one SubscribeResponse, and each
    Delivery carries the notification (raw JSON included) plus the raw JSON again. A backlog of
    large notifications (each one within max_notification_bytes) makes that message exceed
    max_message_bytes: the stream ends RESOURCE_EXHAUSTED "Sent message larger than max", the
    leases are released, the subscriber reconnects and gets the same batch, until the attempts
    run out and the notifications are dead-lettered unseen. With the defaults (4 MiB, 256 KiB,
    64 in flight) 40 pending notifications of 100 KB do it. Expected: every delivery arrives
    (responses split under max_message_bytes)."""
    async with hub_on(
        "sqlite",
        tmp_path,
        groups=("billing",),
        max_message_bytes=MAX_MESSAGE,
        max_notification_bytes=MAX_NOTIFICATION,
    ) as hub:
        count = 3 * MAX_MESSAGE // MAX_NOTIFICATION
        for i in range(count):
            n = make_notification(f"LARGE-{i}")
            n.raw_json += b" " * (MAX_NOTIFICATION - n.ByteSize() - 64)
            response = await publish_async(hub.address, n, timeout=0.3)
            assert response.outcome != REJECTED, response
        async with raw_subscriber(hub.address, "billing", max_in_flight=64) as sub:
            try:
                deliveries = await sub.receive(count, timeout=3)
            except AssertionError as exc:
                tried(f"backlog of large notifications: {sub.code}")
                FIGURES.failed("crashes", f"backlog of {count} large notifications: {exc}")
                raise
            tried("backlog of large notifications: delivered")
            assert len({d.notification_id for d in deliveries}) == count


def test_notification_sizes_around_the_limit(grpc_hub: HubHandle) -> None:
    for delta in (-1, 0, 1, 100):
        n = make_notification()
        n.raw_json += b" " * (MAX_NOTIFICATION - n.ByteSize() + delta)
        before = stored(grpc_hub)
        response = publish(grpc_hub.address, n, timeout=SOON)
        tried(f"Publish at limit{delta:+d}: {hub_pb2.PublishOutcome.Name(response.outcome)}")
        if delta > 0:
            assert response.outcome == REJECTED and "more than the limit" in response.detail
            assert stored(grpc_hub) == before
        else:
            assert response.outcome == ACKNOWLEDGED, response


# -- Subscribe ---------------------------------------------------------------------------------

# Mostly declared groups and valid types, so that most streams open and their actions are fuzzed.
group_names = st.one_of(
    st.sampled_from(QUIET),
    st.sampled_from(QUIET),
    st.sampled_from(QUIET),
    st.sampled_from(
        [
            "shipping",
            "a" * 63,
            "a" * 64,
            "",
            "Billing",
            "-x",
            ".x",
            "billing ",
            "bill/ing",
            "billing\n",
            "bïlling",
            "x" * 1000,
        ]
    ),
    st.text(max_size=20),
)
_any_duration = st.builds(
    lambda s, n: Duration(seconds=s, nanos=n),
    st.one_of(st.integers(-3, 3), st.integers(-(10**11), 10**11)),
    st.one_of(st.just(0), st.integers(-999_999_999, 999_999_999)),
)
_positive_duration = st.builds(
    lambda s, n: Duration(seconds=s, nanos=n),
    st.one_of(st.integers(0, 30), st.integers(0, 10**11)),
    st.integers(0, 999_999_999),
)
durations = st.one_of(st.none(), _positive_duration, _positive_duration, _any_duration)
action_ids = st.one_of(
    st.text(max_size=30),
    st.builds(lambda a, b: f"{a}.{b}", st.integers(0, 10**20), st.text(max_size=20)),
    st.sampled_from(["1.x", "0.0", ".", "..", "1..2", "१.x", "1." + "t" * 200]),
)
actions = st.lists(
    st.one_of(
        st.tuples(st.just("ack"), action_ids),
        st.tuples(st.just("nack"), action_ids, durations),
        st.tuples(st.just("reject"), action_ids, st.text(max_size=2000)),
        st.tuples(st.just("extend"), action_ids, durations),
        st.tuples(st.just("empty")),
    ),
    max_size=6,
)


@st.composite
def opens(draw: st.DrawFn) -> hub_pb2.Open:
    o = hub_pb2.Open(
        group=draw(group_names),
        client_id=draw(st.text(max_size=100)),
        max_in_flight=draw(st.one_of(st.integers(0, 3), st.integers(0, 2**32 - 1))),
    )
    deadline = draw(durations)
    if deadline is not None:
        o.ack_deadline.CopyFrom(deadline)
    types = st.one_of(st.sampled_from([1, 2, 3]), st.sampled_from([0, 4, 99, -1, 2**31 - 1]))
    valid_only = draw(st.integers(0, 3)) > 0
    chosen = draw(st.lists(st.sampled_from([1, 2, 3]) if valid_only else types, max_size=3))
    o.notify_types.extend(cast(Any, chosen))
    return o


def open_errors(o: hub_pb2.Open) -> set[grpc.StatusCode]:
    """The statuses the hub may answer this open with (empty: it must open)."""
    errors = set()
    if any(t not in (1, 2, 3) for t in o.notify_types):
        errors.add(INVALID_ARGUMENT)
    if not GROUP_NAME_PATTERN.match(o.group):
        errors.add(INVALID_ARGUMENT)
    elif o.group not in DECLARED:
        errors.add(NOT_FOUND)
    if o.HasField("ack_deadline") and o.ack_deadline.seconds + o.ack_deadline.nanos / 1e9 < 0:
        errors.add(INVALID_ARGUMENT)
    return errors


def _request(action: tuple[Any, ...]) -> hub_pb2.SubscribeRequest:
    kind = action[0]
    if kind == "ack":
        return hub_pb2.SubscribeRequest(ack_ids=[action[1]])
    if kind == "nack":
        nack = hub_pb2.Nack(delivery_id=action[1])
        if action[2] is not None:
            nack.delay.CopyFrom(action[2])
        return hub_pb2.SubscribeRequest(nacks=[nack])
    if kind == "reject":
        return hub_pb2.SubscribeRequest(
            rejects=[hub_pb2.Reject(delivery_id=action[1], reason=action[2])]
        )
    if kind == "extend":
        ext = hub_pb2.Extension(delivery_id=action[1])
        if action[2] is not None:
            ext.extension.CopyFrom(action[2])
        return hub_pb2.SubscribeRequest(extensions=[ext])
    return hub_pb2.SubscribeRequest()


@fuzz_settings(80)
@given(o=opens(), steps=actions, second_open=st.booleans())
def test_subscribe_opens_and_actions_get_precise_answers(
    grpc_hub: HubHandle, o: hub_pb2.Open, steps: list[tuple[Any, ...]], second_open: bool
) -> None:
    """Bad opens: INVALID_ARGUMENT / NOT_FOUND. A good open: settings defaulted and clamped.
    Actions on ids this stream never got: one result each, UNKNOWN (malformed) or UNKNOWN/STALE
    (well-formed), never OK; the stream stays open. A second open ends it: INVALID_ARGUMENT."""
    asyncio.run(_subscribe_case(grpc_hub.address, o, steps, second_open))


async def _subscribe_case(
    address: str, o: hub_pb2.Open, steps: list[tuple[Any, ...]], second_open: bool
) -> None:
    errors = open_errors(o)
    first = hub_pb2.SubscribeRequest(open=o)
    async with raw_subscriber(address, first=first, expect_open=False) as sub:
        if sub.opened is None:
            code = await sub.wait_closed()
            tried(f"Subscribe open: {code.name if code else code}")
            if code not in errors:
                failed_status(f"open {o}", code or grpc.StatusCode.UNKNOWN, sub.details)
            assert code in errors, (o, code, sub.details)
            return
        tried("Subscribe open: opened")
        assert not errors, (o, errors)
        _assert_settings(o, sub)
        for action in steps:
            await _act_and_check(sub, action)
        if second_open:
            await sub.send(first)
            assert await sub.wait_closed() == INVALID_ARGUMENT
            tried("second open: INVALID_ARGUMENT")
        else:
            assert not sub.closed, (sub.code, sub.details)


def _assert_settings(o: hub_pb2.Open, sub: RawSubscriber) -> None:
    assert sub.opened is not None
    assert sub.opened.max_in_flight == min(o.max_in_flight or DEFAULT_IN_FLIGHT, MAX_IN_FLIGHT)
    asked = o.ack_deadline.seconds + o.ack_deadline.nanos / 1e9 if o.HasField("ack_deadline") else 0
    expected = min(max(asked or DEFAULT_DEADLINE, MIN_DEADLINE), MAX_DEADLINE)
    got = sub.opened.ack_deadline.seconds + sub.opened.ack_deadline.nanos / 1e9
    assert abs(got - expected) < 1e-6, (asked, got)


async def _act_and_check(sub: RawSubscriber, action: tuple[Any, ...]) -> None:
    request = _request(action)
    expect = 0 if action[0] == "empty" else 1
    results = await sub.send(request, expect=expect)
    tried(f"action {action[0]}")
    if not expect:
        return
    [result] = results
    delivery_id = action[1]
    assert result.delivery_id == delivery_id
    allowed = {UNKNOWN} if parse_delivery_id(delivery_id) is None else {UNKNOWN, STALE}
    assert result.status in allowed, (action, result)


# -- ids of other streams ----------------------------------------------------------------------


async def test_an_action_on_another_streams_lease_leaves_it_with_its_owner(
    tmp_path: Path,
) -> None:
    """BUG: the store checks a delivery id's group and lease token but not which stream holds
    the lease, so any stream of the group can ack, nack, reject or extend another stream's
    delivery, and the owner's flow-control slot stays taken until it acts itself. The proto says
    an action on a lease that is not this stream's is answered STALE. Expected: STALE or UNKNOWN
    for the stranger, OK for the owner afterwards."""
    async with (
        hub_on("sqlite", tmp_path, groups=("billing",)) as hub,
        raw_subscriber(hub.address, "billing", client_id="owner", max_in_flight=1) as owner,
    ):
        await publish_async(hub.address, make_notification("OWNED-1"), timeout=0.5)
        [delivery] = await owner.receive(1)
        async with raw_subscriber(hub.address, "billing", client_id="stranger") as stranger:
            stranger_results = [
                *await stranger.ack(delivery.delivery_id),
                *await stranger.extend(delivery.delivery_id, 60),
                *await stranger.nack(delivery.delivery_id, 0),
                *await stranger.reject(delivery.delivery_id, "not mine"),
            ]
            statuses = [hub_pb2.ActionStatus.Name(r.status) for r in stranger_results]
            tried(f"foreign-stream actions: {','.join(statuses)}")
            await stranger.receive_none(within=0.3)
        if any(r.status == ACTION_OK for r in stranger_results):
            FIGURES.failed("crashes", f"another stream's lease settled by a stranger: {statuses}")
        assert all(r.status in (UNKNOWN, STALE) for r in stranger_results), statuses
        [mine] = await owner.ack(delivery.delivery_id)
        assert mine.status == ACTION_OK


async def test_ids_from_another_group_are_stale_or_unknown(tmp_path: Path) -> None:
    async with (
        hub_on("sqlite", tmp_path, groups=("billing", "audit")) as hub,
        raw_subscriber(hub.address, "billing") as billing,
        raw_subscriber(hub.address, "audit") as audit,
    ):
        await publish_async(hub.address, make_notification("CROSS-1"), timeout=0.5)
        [mine] = await billing.receive(1)
        [theirs] = await audit.receive(1)
        results = [
            *await billing.ack(theirs.delivery_id),
            *await billing.reject(theirs.delivery_id),
        ]
        tried("cross-group actions")
        assert {r.status for r in results} <= {UNKNOWN, STALE}
        [ok] = await audit.ack(theirs.delivery_id)
        assert ok.status == ACTION_OK
        [ok] = await billing.ack(mine.delivery_id)
        assert ok.status == ACTION_OK


@fuzz_settings(25)
@given(tokens=st.lists(st.text(max_size=40), min_size=1, max_size=8))
def test_guessed_tokens_for_a_real_delivery_never_settle_it(
    grpc_hub: HubHandle, tokens: list[str]
) -> None:
    """A real notification id with any token but the lease's: UNKNOWN/STALE, the lease stays."""
    asyncio.run(_guess_tokens(grpc_hub.address, tokens))


async def _guess_tokens(address: str, tokens: list[str]) -> None:
    async with raw_subscriber(address, "audit", max_in_flight=1) as sub:
        await publish_async(address, make_notification(), timeout=SOON)
        [delivery] = await sub.receive(1)
        nid, _, token = delivery.delivery_id.partition(".")
        guesses = [f"{nid}.{t}" for t in tokens if t != token]
        assume(guesses)
        results = await sub.ack(*guesses)
        tried("guessed tokens")
        assert all(r.status in (UNKNOWN, STALE) for r in results), results
        [ok] = await sub.ack(delivery.delivery_id)
        assert ok.status == ACTION_OK


# -- first requests ------------------------------------------------------------------------------

NOT_OPENS = {
    "an ack": hub_pb2.SubscribeRequest(ack_ids=["1.x"]),
    "a nack": hub_pb2.SubscribeRequest(nacks=[hub_pb2.Nack(delivery_id="1.x")]),
    "a reject": hub_pb2.SubscribeRequest(rejects=[hub_pb2.Reject(delivery_id="1.x")]),
    "an extension": hub_pb2.SubscribeRequest(extensions=[hub_pb2.Extension(delivery_id="1.x")]),
    "an empty request": hub_pb2.SubscribeRequest(),
}


@pytest.mark.parametrize("case", sorted(NOT_OPENS))
async def test_a_first_request_that_is_not_an_open_is_invalid_argument(
    grpc_hub: HubHandle, case: str
) -> None:
    async with raw_subscriber(grpc_hub.address, first=NOT_OPENS[case], expect_open=False) as sub:
        assert await sub.wait_closed() == INVALID_ARGUMENT, sub.details
        assert "open" in sub.details
    tried(f"first request {case}: INVALID_ARGUMENT")


def test_a_stream_closed_before_any_request_is_invalid_argument(grpc_hub: HubHandle) -> None:
    code, details, replies = raw_stream(grpc_hub.address, [])
    tried(f"empty stream: {code.name}")
    assert code == INVALID_ARGUMENT and not replies, details


@pytest.mark.parametrize(
    ("max_in_flight", "expected"), [(0, DEFAULT_IN_FLIGHT), (1, 1), (2**32 - 1, MAX_IN_FLIGHT)]
)
async def test_max_in_flight_extremes(
    grpc_hub: HubHandle, max_in_flight: int, expected: int
) -> None:
    async with raw_subscriber(grpc_hub.address, "quiet", max_in_flight=max_in_flight) as sub:
        assert sub.opened is not None and sub.opened.max_in_flight == expected
    tried("max_in_flight extreme")


DEADLINES: dict[str, tuple[Duration, grpc.StatusCode | float]] = {
    "negative": (Duration(seconds=-1), INVALID_ARGUMENT),
    "minus one nanosecond": (Duration(nanos=-1), INVALID_ARGUMENT),
    "most negative": (Duration(seconds=-(2**63)), INVALID_ARGUMENT),
    "zero": (Duration(), DEFAULT_DEADLINE),
    "one nanosecond": (Duration(nanos=1), MIN_DEADLINE),
    "huge": (Duration(seconds=10**11), MAX_DEADLINE),
    "largest int64": (Duration(seconds=2**63 - 1), MAX_DEADLINE),
    "nanos beyond a second": (Duration(seconds=1, nanos=2_000_000_000), 3.0),
}


@pytest.mark.parametrize("case", sorted(DEADLINES))
async def test_ack_deadline_extremes(grpc_hub: HubHandle, case: str) -> None:
    duration, expected = DEADLINES[case]
    first = hub_pb2.SubscribeRequest(open=hub_pb2.Open(group="quiet", ack_deadline=duration))
    async with raw_subscriber(grpc_hub.address, first=first, expect_open=False) as sub:
        if isinstance(expected, grpc.StatusCode):
            assert await sub.wait_closed() == expected, sub.details
        else:
            assert sub.opened is not None, (sub.code, sub.details)
            got = sub.opened.ack_deadline.seconds + sub.opened.ack_deadline.nanos / 1e9
            assert abs(got - expected) < 1e-6
    tried(f"ack deadline {case}")


# -- NUL and other control characters: the same answer on every store -----------------------------

BACKENDS = ["sqlite", "postgres"]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_nul_in_an_identity_field_is_rejected_on_every_store(
    tmp_path: Path, backend: str
) -> None:
    """BUG: a NUL character in an identity field is stored by SQLite but makes PostgreSQL fail
    (text cannot hold NUL: psycopg DataError -> StoreDown), so Publish answers UNAVAILABLE on
    every retry and the bridge answers Alipay 503 for ever, for a property of the body. A signed
    `"paymentRequestId":"\\u0000"` gets there: the parser accepts it. Expected, on both stores:
    REJECTED naming the field (the bridge then answers 400), nothing stored."""
    wrong = {}
    async with hub_on(backend, tmp_path, groups=("billing:best-effort",)) as hub:
        for field in ("payment_id", "payment_request_id", "notify_type_text"):
            n = make_notification(f"NUL-{field}")
            setattr(n, field, getattr(n, field)[:3] + "\x00" + getattr(n, field)[3:])
            before = stored(hub)
            try:
                response = await publish_async(hub.address, n, timeout=SOON)
            except grpc.aio.AioRpcError as exc:
                failed_status(f"NUL in {field} ({backend})", exc.code(), exc.details() or "")
                wrong[field] = f"{exc.code().name}: {exc.details()}"
                continue
            tried(f"NUL in {field}: {hub_pb2.PublishOutcome.Name(response.outcome)}")
            if response.outcome != REJECTED or field not in response.detail:
                wrong[field] = hub_pb2.PublishOutcome.Name(response.outcome)
            elif stored(hub) != before:
                wrong[field] = "stored"
        assert (await publish_async(hub.address, make_notification(), SOON)).outcome == ACKNOWLEDGED
    assert not wrong, wrong


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_nul_in_receipt_fields_never_fails_the_store(tmp_path: Path, backend: str) -> None:
    """BUG (PostgreSQL): receipt texts are stored verbatim; a NUL makes Publish UNAVAILABLE.
    They are informational: expected, the notification is stored and acknowledged."""
    async with hub_on(backend, tmp_path, groups=("billing:best-effort",)) as hub:
        request = publish_request(make_notification("NUL-RECEIPT"), "req\x00id")
        request.receipt.client_id = "client\x00id"
        request.receipt.request_time = "2020-01-01T00:00:00\x00+08:00"
        async with grpc.aio.insecure_channel(hub.address) as channel:
            try:
                response = await NotificationHubStub(channel).Publish(request, timeout=SOON)
            except grpc.aio.AioRpcError as exc:
                tried(f"NUL in receipt ({backend}): {exc.code().name}")
                failed_status(
                    f"Publish with NUL in receipt ({backend})", exc.code(), exc.details() or ""
                )
                raise AssertionError(f"{exc.code().name}: {exc.details()}") from None
        tried(f"NUL in receipt ({backend}): {hub_pb2.PublishOutcome.Name(response.outcome)}")
        assert response.outcome == ACKNOWLEDGED, response


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_nul_in_the_client_id_still_gets_deliveries(tmp_path: Path, backend: str) -> None:
    """BUG (PostgreSQL): the client id goes into the member id, which every claim writes as the
    lease's member; with a NUL each claim fails, the dispatch loop retries for ever, and the
    stream stays open receiving nothing. Expected: the stream works (the id sanitised, as '/'
    already is) or the open is INVALID_ARGUMENT."""
    async with (
        hub_on(backend, tmp_path, groups=("billing",)) as hub,
        raw_subscriber(hub.address, "billing", client_id="worker\x00one", expect_open=False) as sub,
    ):
        if sub.opened is None:
            assert await sub.wait_closed() == INVALID_ARGUMENT
            tried(f"NUL in client id ({backend}): INVALID_ARGUMENT")
            return
        await publish_async(hub.address, make_notification("NUL-CLIENT"), timeout=0.5)
        try:
            [delivery] = await sub.receive(1, timeout=2)
        except AssertionError:
            FIGURES.failed("crashes", f"NUL in client id ({backend}): opened, never delivered")
            raise
        [ok] = await sub.ack(delivery.delivery_id)
        assert ok.status == ACTION_OK
        tried(f"NUL in client id ({backend}): delivered")


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_nul_in_a_reject_reason_dead_letters(tmp_path: Path, backend: str) -> None:
    """BUG (PostgreSQL): the reason is stored verbatim; a NUL makes the reject fail with
    StoreDown, the hub ends the stream UNAVAILABLE and the delivery comes back. Expected: OK."""
    async with (
        hub_on(backend, tmp_path, groups=("billing",)) as hub,
        raw_subscriber(hub.address, "billing") as sub,
    ):
        await publish_async(hub.address, make_notification("NUL-REASON"), timeout=0.5)
        [delivery] = await sub.receive(1)
        await sub.send(
            hub_pb2.SubscribeRequest(
                rejects=[hub_pb2.Reject(delivery_id=delivery.delivery_id, reason="bad\x00x")]
            )
        )
        await asyncio.sleep(0.3)
        if sub.closed:
            failed_status(f"reject with NUL ({backend})", sub.code or OK, sub.details)
        assert not sub.closed, f"{sub.code}: {sub.details}"
        [result] = await sub.results(1)
        assert result.status == ACTION_OK
        tried(f"NUL in reject reason ({backend}): OK")
