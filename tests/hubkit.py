"""Test kit for anything that talks to the hub: a real hub, real notifications, a raw subscriber.

Stable API, used by the hub, client, bridge and end-to-end tests. Everything runs for real: a
grpc.aio server on a free port and a SQLite file under the test's `tmp_path` (or any store URL).

Hubs
    async with running_hub(tmp_path, groups=("billing",), **overrides) as hub:
        hub.address, hub.port, hub.broker, hub.store, hub.config, hub.hub   # same event loop

    with hub_in_thread(tmp_path, groups=("billing", "audit:best-effort")) as hub:
        hub.address; hub.call(coroutine_function)      # own loop in a thread: for sync tests

    with hub_process(tmp_path, "--max-attempts", "3", groups=("billing",)) as proc:
        proc.address; proc.kill(); proc.restart(); proc.terminate(); proc.wait()  # `paynotify hub`

    `groups` items are `GroupSpec`s or flag texts: "billing", "audit:best-effort",
    "pos:required:OFFLINE_PAYMENT_CODE". `overrides` are `HubConfig` fields; FAST_SETTINGS (short
    polls and backoffs) apply unless overridden.

Security (all optional; without them the hub is plaintext on loopback with no token, as before)
    async with running_hub(tmp_path, tls=TlsFiles(cert, key, client_ca),
                           tokens={"publisher": P, "subscriber:billing": S, "admin": A}) as hub:
    with hub_process(tmp_path, tls=TlsFiles(...), tokens={...}) as proc:   # as flags and files
    publish(address, n, credentials=grpc.ssl_channel_credentials(ca), token=P)
    async with raw_subscriber(address, "billing", credentials=..., token=S) as sub:

Notifications
    n = make_notification(payment_id="P1", status="S")       # typed proto with a realistic raw_json
    response = publish(address, n, timeout=2.0)              # sync; `publish_async` in a loop

Subscribing without the client library
    async with raw_subscriber(address, "billing", max_in_flight=5, ack_deadline=2.0) as sub:
        [d] = await sub.receive(1)
        [result] = await sub.ack(d.delivery_id)
        await sub.receive_none(within=0.5)
        code = await sub.wait_closed()
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from paynotify.v1 import hub_pb2, hub_pb2_grpc, notification_pb2
from paynotify_hub.config import HubConfig, TlsFiles, parse_group
from paynotify_hub.domain import GroupSpec, RetryPolicy
from paynotify_hub.server import Hub, create_server
from paynotify_hub.store import Store, open_store
from paynotify_hub.tokens import Credential, Secret, TokenTable, parse_principal

__all__ = [
    "FAST_FLAGS",
    "FAST_SETTINGS",
    "HubProcess",
    "RawSubscriber",
    "RunningHub",
    "ThreadedHub",
    "aio_channel",
    "bearer",
    "free_port",
    "hub_config",
    "hub_in_thread",
    "hub_process",
    "make_notification",
    "open_request",
    "publish",
    "publish_async",
    "raw_subscriber",
    "token_table",
]

T = TypeVar("T")
GroupsArg = Iterable[str | GroupSpec]

# Short polls, backoffs and grace periods: tests wait tenths of seconds, not the production seconds.
FAST_SETTINGS: dict[str, Any] = {
    "retry": RetryPolicy(min_backoff=0.1, max_backoff=1.0, max_attempts=5),
    "poll_interval": 0.2,
    "lease_check_interval": 0.05,
    "min_ack_deadline": 0.1,
    "default_ack_deadline": 10.0,
    "shutdown_grace": 1.0,
    "store_timeout": 5.0,
    "admin_refresh_interval": 0.1,
}
# The same for `hub_process` (flags of `paynotify hub`).
FAST_FLAGS: tuple[str, ...] = (
    "--min-backoff", "0.1", "--max-backoff", "1", "--max-attempts", "5",
    "--poll-interval", "0.2", "--lease-check-interval", "0.05", "--shutdown-grace", "1",
)  # fmt: skip
_LISTENING = re.compile(r"paynotify-hub listening on (\S+)")
START_TIMEOUT = 20.0


def free_port() -> int:
    """A TCP port nobody listens on right now (on 127.0.0.1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _group_specs(groups: GroupsArg) -> tuple[GroupSpec, ...]:
    return tuple(g if isinstance(g, GroupSpec) else parse_group(g) for g in groups)


def token_table(tokens: Mapping[str, str] | TokenTable) -> TokenTable:
    """{"publisher": T, "subscriber:billing": T, "admin": T} as the hub's TokenTable."""
    if isinstance(tokens, TokenTable):
        return tokens
    return TokenTable(
        tuple(
            Credential(parse_principal(role), Secret(token), f"test {role}")
            for role, token in tokens.items()
        )
    )


def hub_config(
    tmp_path: Path,
    groups: GroupsArg = ("billing",),
    *,
    store_url: str | None = None,
    **overrides: Any,
) -> HubConfig:
    """A HubConfig on 127.0.0.1:0 and `tmp_path/hub.db`, with FAST_SETTINGS and `overrides`
    (`tokens` may be a mapping role -> token, see `token_table`)."""
    if "tokens" in overrides:
        overrides["tokens"] = token_table(overrides["tokens"])
    settings: dict[str, Any] = {
        **FAST_SETTINGS,
        "listen": "127.0.0.1:0",
        "store_url": store_url or f"sqlite:///{tmp_path / 'hub.db'}",
        "hub_id": "test-hub",
        **overrides,
    }
    return HubConfig(groups=_group_specs(groups), **settings)


# -- a hub in this event loop ---------------------------------------------------------------------


@dataclass
class RunningHub:
    """A started hub: connect to `address`; `broker` and `store` belong to the current loop."""

    address: str
    port: int
    hub: Hub
    config: HubConfig
    store: Store

    @property
    def broker(self) -> Any:
        return self.hub.broker

    async def stop(self, grace: float | None = None) -> None:
        await self.hub.stop(grace)


@contextlib.asynccontextmanager
async def running_hub(
    tmp_path: Path,
    groups: GroupsArg = ("billing",),
    *,
    store_url: str | None = None,
    **overrides: Any,
) -> AsyncIterator[RunningHub]:
    """Start a hub with a real store; stop it (gracefully) and close the store on exit."""
    config = hub_config(tmp_path, groups, store_url=store_url, **overrides)
    store = open_store(config.store_url)
    await store.open()
    try:
        hub = create_server(config, store)
        await hub.start()
        try:
            yield RunningHub(f"127.0.0.1:{hub.port}", hub.port, hub, config, store)
        finally:
            await hub.stop()
    finally:
        await store.close()


# -- a hub in a thread, for synchronous tests ---------------------------------------------------


@dataclass
class ThreadedHub:
    """A hub running on its own event loop in a background thread."""

    address: str
    port: int
    config: HubConfig
    running: RunningHub
    loop: asyncio.AbstractEventLoop

    def call(self, fn: Callable[[RunningHub], Awaitable[T]], timeout: float = 30.0) -> T:
        """Run `await fn(running_hub)` on the hub's loop and return its result."""

        async def run() -> T:
            return await fn(self.running)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)


@contextlib.contextmanager
def hub_in_thread(
    tmp_path: Path,
    groups: GroupsArg = ("billing",),
    *,
    store_url: str | None = None,
    **overrides: Any,
) -> Iterator[ThreadedHub]:
    """`running_hub` in a background thread; stopped and joined on exit."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        state["stop"] = stop
        try:
            async with running_hub(tmp_path, groups, store_url=store_url, **overrides) as hub:
                state["hub"] = hub
                ready.set()
                await stop.wait()
        except BaseException as exc:
            state["error"] = exc
            ready.set()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        if not ready.wait(START_TIMEOUT) or "error" in state:
            raise RuntimeError("hub did not start in its thread") from state.get("error")
        hub: RunningHub = state["hub"]
        yield ThreadedHub(hub.address, hub.port, hub.config, hub, loop)
    finally:
        if "stop" in state:
            loop.call_soon_threadsafe(state["stop"].set)
        thread.join(30)
        if not thread.is_alive():
            loop.close()


# -- `paynotify hub` as a process ---------------------------------------------------------------


@dataclass
class HubProcess:
    """`python -m paynotify_cli.main hub` on a fixed free port, so `address` survives restarts."""

    args: list[str]
    port: int
    log_dir: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    address: str = field(init=False)

    def __post_init__(self) -> None:
        self.address = f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def stdout_path(self) -> Path:
        return self.log_dir / f"hub-{self.starts}.out"

    @property
    def stderr_path(self) -> Path:
        return self.log_dir / f"hub-{self.starts}.err"

    def start(self) -> None:
        self.starts += 1
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(self.args, stdout=out, stderr=err, env=self.env)
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            match = _LISTENING.search(self.stdout_path.read_text(errors="replace"))
            if match:
                return
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"hub did not start; its stderr:\n{self.log()[-4000:]}")

    def log(self) -> str:
        """The current run's stderr (logs)."""
        return self.stderr_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL, like `kill -9`, and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def terminate(self) -> None:
        """SIGTERM: the hub stops gracefully; `wait()` for its exit code."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 20.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def restart(self) -> None:
        """Start again on the same port and store (after kill() or terminate())."""
        if self.process is not None and self.process.poll() is None:
            self.terminate()
            self.wait()
        self.start()


@contextlib.contextmanager
def hub_process(
    tmp_path: Path,
    *extra_args: str,
    groups: GroupsArg = ("billing",),
    store_url: str | None = None,
    fast: bool = True,
    env: dict[str, str] | None = None,
    log_level: str = "INFO",
    tls: TlsFiles | None = None,
    tokens: Mapping[str, str] | None = None,
) -> Iterator[HubProcess]:
    """Start `paynotify hub` as a subprocess, wait (bounded) until it listens, kill it on exit.

    `groups` are flag texts (or GroupSpecs named by their flag text); `extra_args` go last, so they
    win over FAST_FLAGS. Its output lands in `tmp_path/hub-N.out|err`. `tls` and `tokens` (role ->
    token, written to files under `tmp_path/tokens`) become the hub's security flags.
    """
    tmp_path.mkdir(parents=True, exist_ok=True)
    extra_args = (*_security_flags(tmp_path, tls, tokens or {}), *extra_args)
    port = free_port()
    store_url = store_url or f"sqlite:///{tmp_path / 'hub.db'}"
    args = [sys.executable, "-m", "paynotify_cli.main", "--log-level", log_level, "hub"]
    args += ["--listen", f"127.0.0.1:{port}", "--store", store_url]
    for g in groups:
        args += ["--group", g if isinstance(g, str) else _group_flag(g)]
    args += [*(FAST_FLAGS if fast else ()), *extra_args]
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("PAYNOTIFY_")}
    proc = HubProcess(args, port, tmp_path, {**clean_env, **(env or {})})
    proc.start()
    try:
        yield proc
    finally:
        proc.kill()


def _security_flags(tmp_path: Path, tls: TlsFiles | None, tokens: Mapping[str, str]) -> list[str]:
    flags: list[str] = []
    if tls is not None:
        flags += ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]
        if tls.client_ca is not None:
            flags += ["--tls-client-ca", str(tls.client_ca)]
    folder = tmp_path / "tokens"
    for number, (role, token) in enumerate(tokens.items()):
        folder.mkdir(mode=0o700, exist_ok=True)
        path = folder / f"token-{number}"
        path.touch(mode=0o600)
        path.write_text(token + "\n")
        principal = parse_principal(role)
        if principal.group:
            flags += ["--subscriber-token-file", f"{principal.group}={path}"]
        else:
            flags += [f"--{principal.role}-token-file", str(path)]
    return flags


def _group_flag(spec: GroupSpec) -> str:
    mode = "required" if spec.required else "best-effort"
    types = "+".join(sorted(spec.notify_types))
    return f"{spec.name}:{mode}:{types}" if types else f"{spec.name}:{mode}"


# -- notifications --------------------------------------------------------------------------------


def _datetime(text: str) -> notification_pb2.DateTime:
    ts = Timestamp()
    ts.FromJsonString(text)
    return notification_pb2.DateTime(timestamp=ts, text=text)


def make_notification(
    payment_id: str | None = None,
    *,
    payment_request_id: str | None = None,
    notify_type: str = "PAYMENT_RESULT",
    status: str = "S",
    amount: str = "100",
    currency: str = "HKD",
) -> notification_pb2.PaymentNotification:
    """A PaymentNotification as the bridge would build it, with the JSON body in raw_json.

    `payment_id` defaults to a fresh unique id; `status` "" means no `result` object (in-store).
    """
    payment_id = payment_id if payment_id is not None else f"2020{uuid.uuid4().hex[:16].upper()}"
    payment_request_id = payment_request_id or f"req-{payment_id or uuid.uuid4().hex[:12]}"
    created, paid = "2020-01-01T12:01:00+08:30", "2020-01-01T12:01:01+08:30"
    body: dict[str, Any] = {"notifyType": notify_type}
    if status:
        code = "SUCCESS" if status == "S" else "PAYMENT_FAIL"
        body["result"] = {"resultCode": code, "resultStatus": status, "resultMessage": code.lower()}
    body.update(paymentRequestId=payment_request_id, paymentId=payment_id)
    body.update(paymentAmount={"value": amount, "currency": currency}, paymentCreateTime=created)
    if status == "S":
        body["paymentTime"] = paid
    n = notification_pb2.PaymentNotification(
        notify_type=_notify_type_enum(notify_type),
        notify_type_text=notify_type,
        payment_request_id=payment_request_id,
        payment_id=payment_id,
        payment_amount=notification_pb2.Amount(
            currency=currency, value=amount, minor_units=int(amount)
        ),
        payment_create_time=_datetime(created),
        raw_json=json.dumps(body, separators=(",", ":")).encode(),
    )
    if status:
        n.result.CopyFrom(
            notification_pb2.Result(
                result_code=body["result"]["resultCode"],
                result_status=notification_pb2.ResultStatus.Value(f"RESULT_STATUS_{status}"),
                result_message=body["result"]["resultMessage"],
            )
        )
    if status == "S":
        n.payment_time.CopyFrom(_datetime(paid))
    return n


def _notify_type_enum(text: str) -> notification_pb2.NotifyType.ValueType:
    try:
        return notification_pb2.NotifyType.Value(f"NOTIFY_TYPE_{text}")
    except ValueError:
        return notification_pb2.NOTIFY_TYPE_UNSPECIFIED


def _publish_request(
    notification: notification_pb2.PaymentNotification, request_id: str
) -> hub_pb2.PublishRequest:
    received = Timestamp()
    received.GetCurrentTime()
    receipt = hub_pb2.Receipt(
        received_at=received,
        client_id="SANDBOX_5Y3A2N2YEB3002022",
        request_time="2020-01-01T12:01:02+08:30",
        request_id=request_id or uuid.uuid4().hex,
    )
    return hub_pb2.PublishRequest(notification=notification, receipt=receipt)


def bearer(token: str | None) -> tuple[tuple[str, str], ...]:
    """The call metadata carrying `token` (none without one)."""
    return (("authorization", f"Bearer {token}"),) if token else ()


def publish(
    address: str,
    notification: notification_pb2.PaymentNotification,
    timeout: float = 5.0,
    *,
    request_id: str = "",
    credentials: grpc.ChannelCredentials | None = None,
    token: str | None = None,
) -> hub_pb2.PublishResponse:
    """One Publish with `timeout` as the gRPC deadline, from synchronous code (over TLS with
    `credentials`, with `token` as its bearer token)."""
    channel = (
        grpc.secure_channel(address, credentials)
        if credentials is not None
        else grpc.insecure_channel(address)
    )
    with channel:
        stub = hub_pb2_grpc.NotificationHubStub(channel)
        request = _publish_request(notification, request_id)
        return stub.Publish(request, timeout=timeout, metadata=bearer(token))


def aio_channel(
    address: str,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """A grpc.aio channel to `address`: TLS with `credentials`, else plaintext."""
    if credentials is not None:
        return grpc.aio.secure_channel(address, credentials, list(options))
    return grpc.aio.insecure_channel(address, list(options))


async def publish_async(
    address: str,
    notification: notification_pb2.PaymentNotification,
    timeout: float = 5.0,  # noqa: ASYNC109 (the gRPC deadline of the call)
    *,
    request_id: str = "",
    credentials: grpc.ChannelCredentials | None = None,
    token: str | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> hub_pb2.PublishResponse:
    """One Publish with `timeout` as the gRPC deadline, from async code."""
    async with aio_channel(address, credentials, options) as channel:
        stub = hub_pb2_grpc.NotificationHubStub(channel)
        request = _publish_request(notification, request_id)
        return await stub.Publish(request, timeout=timeout, metadata=bearer(token))


# -- a raw subscriber -----------------------------------------------------------------------------


def _duration(seconds: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


class RawSubscriber:
    """A Subscribe stream driven by hand: send actions, await deliveries and action results.

    Every delivery received is also kept in `received`, and every response in `responses` (in
    arrival order).
    """

    def __init__(self, channel: grpc.aio.Channel, metadata: Sequence[tuple[str, str]] = ()) -> None:
        self._channel = channel
        self._metadata = tuple(metadata)
        self._outbox: asyncio.Queue[hub_pb2.SubscribeRequest | None] = asyncio.Queue()
        self._deliveries: asyncio.Queue[hub_pb2.Delivery] = asyncio.Queue()
        self._results: asyncio.Queue[hub_pb2.ActionResult] = asyncio.Queue()
        self._first = asyncio.Event()
        self._closed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._call: Any = None
        self.opened: hub_pb2.Opened | None = None
        self.received: list[hub_pb2.Delivery] = []
        self.responses: list[hub_pb2.SubscribeResponse] = []
        self.code: grpc.StatusCode | None = None
        self.details: str = ""

    async def _requests(self) -> AsyncIterator[hub_pb2.SubscribeRequest]:
        while (request := await self._outbox.get()) is not None:
            yield request

    async def _start(self, first: hub_pb2.SubscribeRequest) -> None:
        self._outbox.put_nowait(first)
        self._call = hub_pb2_grpc.NotificationHubStub(self._channel).Subscribe(
            self._requests(), metadata=self._metadata
        )
        self._reader = asyncio.create_task(self._read())
        await asyncio.wait_for(self._first.wait(), START_TIMEOUT)

    async def _read(self) -> None:
        try:
            async for response in self._call:
                self._route(response)
            self.code = await self._call.code()
            self.details = await self._call.details()
        except grpc.aio.AioRpcError as exc:
            self.code, self.details = exc.code(), exc.details() or ""
        except asyncio.CancelledError:
            self.code = grpc.StatusCode.CANCELLED
        finally:
            self._first.set()
            self._closed.set()

    def _route(self, response: hub_pb2.SubscribeResponse) -> None:
        self.responses.append(response)
        if response.HasField("opened"):
            self.opened = response.opened
        for delivery in response.deliveries:
            self.received.append(delivery)
            self._deliveries.put_nowait(delivery)
        for result in response.action_results:
            self._results.put_nowait(result)
        self._first.set()

    @property
    def member_id(self) -> str:
        return self.opened.member_id if self.opened else ""

    async def receive(self, count: int = 1, timeout: float = 10.0) -> list[hub_pb2.Delivery]:  # noqa: ASYNC109
        """Exactly the next `count` deliveries; AssertionError naming what came when they don't."""
        got: list[hub_pb2.Delivery] = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            remaining = deadline - time.monotonic()
            try:
                got.append(await asyncio.wait_for(self._deliveries.get(), max(remaining, 0.001)))
            except TimeoutError:
                raise AssertionError(
                    f"got {len(got)} of {count} deliveries within {timeout}s "
                    f"(stream status {self.code}: {self.details})"
                ) from None
        return got

    async def receive_none(self, within: float) -> None:
        """Assert that no delivery arrives within `within` seconds."""
        with contextlib.suppress(TimeoutError):
            extra = await asyncio.wait_for(self._deliveries.get(), within)
            raise AssertionError(
                f"unexpected delivery {extra.delivery_id} (attempt {extra.attempt})"
            )

    def pending_deliveries(self) -> int:
        """Received but not yet taken by `receive`."""
        return self._deliveries.qsize()

    def pending_results(self) -> int:
        """Action results received but not yet taken by `results`."""
        return self._results.qsize()

    async def results(self, count: int, timeout: float = 10.0) -> list[hub_pb2.ActionResult]:  # noqa: ASYNC109
        got = []
        for _ in range(count):
            try:
                got.append(await asyncio.wait_for(self._results.get(), timeout))
            except TimeoutError:
                raise AssertionError(f"got {len(got)} of {count} action results") from None
        return got

    async def send(
        self, request: hub_pb2.SubscribeRequest, *, expect: int = 0
    ) -> list[hub_pb2.ActionResult]:
        """Send any request; wait for `expect` action results."""
        self._outbox.put_nowait(request)
        return await self.results(expect) if expect else []

    async def ack(self, *delivery_ids: str, wait: bool = True) -> list[hub_pb2.ActionResult]:
        request = hub_pb2.SubscribeRequest(ack_ids=delivery_ids)
        return await self.send(request, expect=len(delivery_ids) if wait else 0)

    async def nack(
        self, delivery_id: str, delay: float | None = None, *, wait: bool = True
    ) -> list[hub_pb2.ActionResult]:
        nack = hub_pb2.Nack(delivery_id=delivery_id)
        if delay is not None:
            nack.delay.CopyFrom(_duration(delay))
        return await self.send(hub_pb2.SubscribeRequest(nacks=[nack]), expect=1 if wait else 0)

    async def reject(
        self, delivery_id: str, reason: str = "rejected by test", *, wait: bool = True
    ) -> list[hub_pb2.ActionResult]:
        reject = hub_pb2.Reject(delivery_id=delivery_id, reason=reason)
        return await self.send(hub_pb2.SubscribeRequest(rejects=[reject]), expect=1 if wait else 0)

    async def extend(
        self, delivery_id: str, seconds: float | None = None, *, wait: bool = True
    ) -> list[hub_pb2.ActionResult]:
        ext = hub_pb2.Extension(delivery_id=delivery_id)
        if seconds is not None:
            ext.extension.CopyFrom(_duration(seconds))
        return await self.send(hub_pb2.SubscribeRequest(extensions=[ext]), expect=1 if wait else 0)

    async def wait_closed(self, timeout: float = 20.0) -> grpc.StatusCode | None:  # noqa: ASYNC109
        """Until the hub ends the stream; its status code."""
        await asyncio.wait_for(self._closed.wait(), timeout)
        return self.code

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def close(self) -> None:
        """Cancel the stream (as a dropped connection would)."""
        if self._call is not None and not self._closed.is_set():
            self._call.cancel()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


def open_request(
    group: str,
    client_id: str = "test",
    max_in_flight: int = 0,
    ack_deadline: float | None = None,
    notify_types: Sequence[str] = (),
) -> hub_pb2.SubscribeRequest:
    o = hub_pb2.Open(group=group, client_id=client_id, max_in_flight=max_in_flight)
    if ack_deadline is not None:
        o.ack_deadline.CopyFrom(_duration(ack_deadline))
    o.notify_types.extend(
        notification_pb2.NotifyType.Value(f"NOTIFY_TYPE_{t}") for t in notify_types
    )
    return hub_pb2.SubscribeRequest(open=o)


@contextlib.asynccontextmanager
async def raw_subscriber(
    address: str,
    group: str = "billing",
    *,
    client_id: str = "test",
    max_in_flight: int = 0,
    ack_deadline: float | None = None,
    notify_types: Sequence[str] = (),
    first: hub_pb2.SubscribeRequest | None = None,
    expect_open: bool = True,
    credentials: grpc.ChannelCredentials | None = None,
    token: str | None = None,
) -> AsyncIterator[RawSubscriber]:
    """A Subscribe stream opened on `group` (or starting with `first`); cancelled on exit.

    With `expect_open` (default) an open the hub refuses raises AssertionError with the status; pass
    False to inspect `sub.code` / `await sub.wait_closed()` yourself. `credentials`: over TLS;
    `token`: sent as the bearer token.
    """
    request = first or open_request(group, client_id, max_in_flight, ack_deadline, notify_types)
    async with aio_channel(address, credentials) as channel:
        sub = RawSubscriber(channel, bearer(token))
        await sub._start(request)
        if expect_open and sub.opened is None:
            await sub.wait_closed()
            raise AssertionError(f"subscribe refused: {sub.code}: {sub.details}")
        try:
            yield sub
        finally:
            await sub.close()
