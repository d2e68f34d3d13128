"""Bridge test kit: a real waitress on a loopback port, real keys, real signed HTTP requests.

    bridge = start_bridge(hub.address)                      # fixture `make_bridge` stops it after
    reply = bridge.notify(sample_body("payment_result_success"))
    reply.status, reply.body, reply.json, reply.headers

Everything is real: waitress in a thread, the Falcon app, the gRPC publisher, a hub from
`tests/hubkit.py` on a SQLite file, and the subscriber library.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client import CollectorRegistry

from paynotify_bridge.app import RequestVerifier, create_app
from paynotify_bridge.cli import BridgeServer, build_verifier
from paynotify_bridge.config import BridgeConfig, KeySource
from paynotify_bridge.devkeys import ensure_dev_keys
from paynotify_bridge.publisher import HubPublisher
from paynotify_bridge.signature import load_private_key, sign
from paynotify_bridge.simulator import builtin_samples, request_time_now
from paynotify_client import FlowControl, Message, Subscriber
from tests.hubkit import ThreadedHub, free_port, hub_in_thread

CLIENT_ID = "SANDBOX_5Y3A2N2YEB3002022"
NOTIFY_PATH = "/alipay/notify"
SUCCESS_BODY = b'{"result":{"resultCode":"SUCCESS","resultStatus":"S","resultMessage":"success"}}'
SAMPLE_NAMES = sorted(builtin_samples())
SHARED_SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "spec" / "samples"
# Tests wait at most this long for anything that should happen "soon".
SOON = 10.0


def sample_body(name: str) -> bytes:
    return builtin_samples()[name]


@dataclass(frozen=True)
class Keys:
    private_key: rsa.RSAPrivateKey
    private_path: Path
    public_path: Path


@pytest.fixture(scope="session")
def alipay_keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    """A key pair playing Alipay's (made once per session: RSA key generation is slow)."""
    dev = ensure_dev_keys(tmp_path_factory.mktemp("keys"))
    return Keys(load_private_key(dev.private_path.read_bytes()), dev.private_path, dev.public_path)


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def result(self) -> dict[str, str]:
        result: dict[str, str] = self.json["result"]
        return result


def http_request(
    base: str,
    method: str,
    target: str,
    body: bytes | Iterable[bytes] | None = None,
    headers: Mapping[str, str] | None = None,
    *,
    timeout: float = 30.0,
    chunked: bool = False,
) -> Reply:
    host, port = base.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request(method, target, body, dict(headers or {}), encode_chunked=chunked)
        response = connection.getresponse()
        return Reply(
            response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        )
    finally:
        connection.close()


def signed_headers(
    keys: Keys,
    body: bytes,
    *,
    path: str = NOTIFY_PATH,
    client_id: str = CLIENT_ID,
    request_time: str | None = None,
    key_version: str | None = "1",
    content_type: str | None = "application/json; charset=UTF-8",
) -> dict[str, str]:
    request_time = request_time or request_time_now()
    headers = {
        "Client-Id": client_id,
        "Request-Time": request_time,
        "Signature": sign(
            keys.private_key, "POST", path, client_id, request_time, body, key_version
        ),
    }
    if content_type is not None:
        headers["Content-Type"] = content_type
    return headers


@dataclass
class Bridge:
    """A running bridge: `base` is http://127.0.0.1:PORT."""

    base: str
    config: BridgeConfig
    keys: Keys
    registry: CollectorRegistry
    server: BridgeServer
    publisher: HubPublisher
    thread: threading.Thread = field(repr=False)

    def notify(
        self,
        body: bytes,
        *,
        target: str | None = None,
        headers: Mapping[str, str | None] | None = None,
        chunked: bool = False,
        timeout: float = 30.0,
        **sign_options: Any,
    ) -> Reply:
        """POST `body` to the notify path, signed like Alipay; `headers` override (None removes)."""
        target = target or self.config.path
        sign_options.setdefault("path", target.split("?", 1)[0])
        all_headers: dict[str, str | None] = {**signed_headers(self.keys, body, **sign_options)}
        all_headers.update(headers or {})
        clean = {k: v for k, v in all_headers.items() if v is not None}
        payload: bytes | Iterable[bytes] = [body] if chunked else body
        return http_request(
            self.base, "POST", target, payload, clean, timeout=timeout, chunked=chunked
        )

    def get(self, target: str, timeout: float = 30.0) -> Reply:
        return http_request(self.base, "GET", target, timeout=timeout)

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def stop(self) -> None:
        self.server.stop()
        self.thread.join(SOON + self.config.publish_timeout)
        self.publisher.close()


def bridge_config(alipay_keys: Keys, hubs: Iterable[str], **overrides: Any) -> BridgeConfig:
    settings: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "hubs": tuple(hubs),
        "public_keys": (KeySource(alipay_keys.public_path, "1"),),
        "client_ids": (CLIENT_ID,),
        "publish_timeout": 2.0,
        "threads": 8,
        **overrides,
    }
    return BridgeConfig(**settings)


def start_bridge(
    config: BridgeConfig,
    keys: Keys,
    wrap_verifier: Callable[[RequestVerifier], RequestVerifier] | None = None,
    **app_options: Any,
) -> Bridge:
    """`wrap_verifier` gets the real verifier and returns the one the app uses (to watch it)."""
    registry = CollectorRegistry()
    publisher = HubPublisher(config.hubs, config.publish_timeout)
    verifier = build_verifier(config)
    if wrap_verifier is not None:
        verifier = wrap_verifier(verifier)
    app = create_app(config, verifier, publisher, registry=registry, **app_options)
    server = BridgeServer(app, config)
    thread = threading.Thread(target=server.serve, name="bridge", daemon=True)
    thread.start()
    return Bridge(server.url, config, keys, registry, server, publisher, thread)


BridgeFactory = Callable[..., Bridge]


@pytest.fixture
def make_bridge(alipay_keys: Keys) -> Iterator[BridgeFactory]:
    """`make_bridge(hubs, **config_overrides)` -> a running Bridge, stopped after the test."""
    started: list[Bridge] = []

    def make(hubs: str | Iterable[str], **overrides: Any) -> Bridge:
        hub_list = [hubs] if isinstance(hubs, str) else list(hubs)
        app_options = {
            k: overrides.pop(k) for k in ("clock", "request_ids", "wrap_verifier") if k in overrides
        }
        bridge = start_bridge(
            bridge_config(alipay_keys, hub_list, **overrides), alipay_keys, **app_options
        )
        started.append(bridge)
        return bridge

    yield make
    for bridge in started:
        bridge.stop()


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[ThreadedHub]:
    """A real hub (own thread and loop) with one required group, "billing"."""
    with hub_in_thread(tmp_path, groups=("billing",)) as running:
        yield running


@pytest.fixture
def bridge(make_bridge: BridgeFactory, hub: ThreadedHub) -> Bridge:
    return make_bridge(hub.address)


@pytest.fixture
def dead_hub_address() -> str:
    return f"127.0.0.1:{free_port()}"


# -- the hub's store, read directly -------------------------------------------------------------


def store_counts(hub: ThreadedHub) -> tuple[int, int]:
    """(notifications stored, receipts stored) in the hub's SQLite file."""
    path = hub.config.store_url.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
        notifications = db.execute("SELECT count(*) FROM notifications").fetchone()[0]
        receipts = db.execute("SELECT count(*) FROM receipts").fetchone()[0]
    return int(notifications), int(receipts)


# -- a subscriber with the client library -------------------------------------------------------


Decision = Callable[[Message, int], str]  # (message, nth delivery seen) -> "ack" | "nack" | "hold"


def always_ack(message: Message, nth: int) -> str:
    return "ack"


@dataclass
class Collector:
    """What a subscriber received, in order, and what it answered."""

    decide: Decision = always_ack
    messages: queue.Queue[Message] = field(default_factory=queue.Queue)
    seen: list[Message] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, message: Message) -> None:
        with self.lock:
            self.seen.append(message)
            nth = len(self.seen)
        verdict = self.decide(message, nth)
        if verdict == "ack":
            message.ack()
        elif verdict == "nack":
            message.nack(delay=NACK_DELAY)
        self.messages.put(message)

    def next(self, timeout: float = SOON) -> Message:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no delivery within {timeout}s") from None

    def assert_nothing(self, within: float) -> None:
        """No delivery arrives within `within` seconds beyond those taken with `next()`."""
        with contextlib.suppress(queue.Empty):
            extra = self.messages.get(timeout=within)
            raise AssertionError(f"unexpected delivery (attempt {extra.attempt})")

    def assert_total(self, count: int, settle: float) -> None:
        """Exactly `count` deliveries, still so after `settle` seconds."""
        time.sleep(settle)
        with self.lock:
            attempts = [m.attempt for m in self.seen]
        assert len(attempts) == count, f"deliveries: attempts {attempts}"


NACK_DELAY = 0.3


@contextlib.contextmanager
def subscribed(
    address: str, group: str = "billing", decide: Decision = always_ack
) -> Iterator[Collector]:
    collector = Collector(decide)
    subscriber = Subscriber(
        address, group, client_id="bridge-test", flow_control=FlowControl(max_in_flight=4)
    )
    try:
        subscriber.subscribe(collector)
        yield collector
    finally:
        subscriber.close(timeout=5)


__all__ = [
    "CLIENT_ID",
    "NOTIFY_PATH",
    "SAMPLE_NAMES",
    "SHARED_SAMPLES",
    "SOON",
    "SUCCESS_BODY",
    "Bridge",
    "BridgeFactory",
    "Collector",
    "Keys",
    "Reply",
    "bridge_config",
    "http_request",
    "sample_body",
    "signed_headers",
    "start_bridge",
    "store_counts",
    "subscribed",
]
