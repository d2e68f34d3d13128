"""The bridge to a hub with mutual TLS and tokens: configured from its real flags, end to end."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from paynotify_bridge.app import create_app
from paynotify_bridge.cli import BridgeServer, build_publisher, build_verifier, config_from_args
from paynotify_bridge.config import BridgeConfig, ConfigError
from paynotify_cli.main import build_parser
from paynotify_client import FlowControl, Subscriber
from paynotify_client.credentials import tls_credentials
from paynotify_hub.config import TlsFiles
from tests.bridge.conftest import CLIENT_ID, SUCCESS_BODY, Bridge, Keys, sample_body
from tests.hubkit import ThreadedHub, hub_in_thread
from tests.security.conftest import GROUPS, WRONG_TOKEN, Tokens, write_token
from tests.security.pki import Pki

StartBridge = Callable[[list[str]], Bridge]


@pytest.fixture
def secure_hub(tmp_path: Path, mtls: TlsFiles, tokens: Tokens) -> Iterator[ThreadedHub]:
    with hub_in_thread(tmp_path, GROUPS, tls=mtls, tokens=tokens.table()) as hub:
        yield hub


def bridge_flags(hub: str, keys: Keys, pki: Pki, token_file: Path) -> list[str]:
    return [
        "bridge", "--listen", "127.0.0.1:0", "--hub", hub,
        "--alipay-public-key", f"1={keys.public_path}", "--client-id", CLIENT_ID,
        "--publish-timeout", "3",
        "--hub-tls-ca", str(pki.ca),
        "--hub-tls-cert", str(pki.client.cert), "--hub-tls-key", str(pki.client.key),
        "--hub-token-file", str(token_file),
    ]  # fmt: skip


@pytest.fixture
def start_bridge(alipay_keys: Keys) -> Iterator[StartBridge]:
    started: list[Bridge] = []

    def start(flags: list[str]) -> Bridge:
        config = config_from_args(build_parser().parse_args(flags), environ={})
        registry = CollectorRegistry()
        publisher = build_publisher(config)
        app = create_app(config, build_verifier(config), publisher, registry=registry)
        server = BridgeServer(app, config)
        thread = threading.Thread(target=server.serve, daemon=True)
        thread.start()
        bridge = Bridge(server.url, config, alipay_keys, registry, server, publisher, thread)
        started.append(bridge)
        return bridge

    yield start
    for bridge in started:
        bridge.stop()


def test_the_bridge_publishes_over_mutual_tls_with_its_token(
    secure_hub: ThreadedHub,
    start_bridge: StartBridge,
    alipay_keys: Keys,
    pki: Pki,
    tokens: Tokens,
    tmp_path: Path,
) -> None:
    token_file = write_token(tmp_path, "publisher.token", tokens.publisher)
    bridge = start_bridge(bridge_flags(secure_hub.address, alipay_keys, pki, token_file))
    credentials = tls_credentials(pki.ca, pki.client.cert, pki.client.key)
    with Subscriber(
        secure_hub.address,
        "billing",
        channel_credentials=credentials,
        token=tokens.billing,
        flow_control=FlowControl(max_in_flight=4),
    ) as subscriber:
        subscriber.subscribe(lambda message: message.ack())
        reply = bridge.notify(sample_body("payment_result_success"))
    assert (reply.status, reply.body) == (200, SUCCESS_BODY)
    assert bridge.get("/readyz").status == 200


def test_a_bridge_with_a_wrong_token_answers_503_and_says_why(
    secure_hub: ThreadedHub,
    start_bridge: StartBridge,
    alipay_keys: Keys,
    pki: Pki,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token_file = write_token(tmp_path, "wrong.token", WRONG_TOKEN)
    bridge = start_bridge(bridge_flags(secure_hub.address, alipay_keys, pki, token_file))
    with caplog.at_level(logging.DEBUG):
        reply = bridge.notify(sample_body("payment_result_success"))
    assert reply.status == 503 and reply.body != SUCCESS_BODY
    assert "refused the bridge's credential (UNAUTHENTICATED" in caplog.text
    assert WRONG_TOKEN not in caplog.text


def test_a_bridge_without_a_client_certificate_cannot_reach_a_mutual_tls_hub(
    secure_hub: ThreadedHub,
    start_bridge: StartBridge,
    alipay_keys: Keys,
    pki: Pki,
    tokens: Tokens,
    tmp_path: Path,
) -> None:
    token_file = write_token(tmp_path, "publisher.token", tokens.publisher)
    flags = bridge_flags(secure_hub.address, alipay_keys, pki, token_file)
    cert_at = flags.index("--hub-tls-cert")
    del flags[cert_at : cert_at + 4]  # no --hub-tls-cert / --hub-tls-key
    bridge = start_bridge(flags)
    reply = bridge.notify(sample_body("payment_result_success"))
    assert reply.status == 503
    assert bridge.get("/readyz").status == 503


# -- the bridge's flags ---------------------------------------------------------------------------


def _config(*flags: str, environ: dict[str, str] | None = None) -> BridgeConfig:
    base = ["bridge", "--insecure-skip-signature-check", "--listen", "127.0.0.1:0"]
    return config_from_args(build_parser().parse_args([*base, *flags]), environ=environ or {})


def test_bridge_tls_flags_come_in_sensible_combinations(pki: Pki) -> None:
    with pytest.raises(ConfigError, match="give both"):
        _config("--hub-tls-ca", str(pki.ca), "--hub-tls-cert", str(pki.client.cert))
    with pytest.raises(ConfigError, match="need --hub-tls-ca"):
        _config("--hub-tls-cert", str(pki.client.cert), "--hub-tls-key", str(pki.client.key))
    with pytest.raises(ConfigError, match="need --hub-tls-ca"):
        _config("--hub-tls-server-name", "hub.internal")
    config = _config("--hub-tls-ca", str(pki.ca), "--hub-tls-server-name", "hub.internal")
    assert (config.hub_tls_ca, config.hub_tls_server_name) == (pki.ca, "hub.internal")


def test_the_bridge_token_comes_from_a_file_or_the_environment(
    tmp_path: Path, tokens: Tokens
) -> None:
    path = write_token(tmp_path, "t", tokens.publisher)
    assert _config("--hub-token-file", str(path)).hub_token == tokens.publisher
    env = {"PAYNOTIFY_HUB_TOKEN": tokens.publisher}
    config = _config(environ=env)
    assert config.hub_token == tokens.publisher
    assert tokens.publisher not in repr(config)
    with pytest.raises(ConfigError, match="cannot read"):
        _config("--hub-token-file", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="empty"):
        _config("--hub-token-file", str(write_token(tmp_path, "empty", "")))


def test_a_bad_ca_file_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate")
    config = _config("--hub-tls-ca", str(tmp_path / "ca.pem"))
    with pytest.raises(ConfigError, match="not a PEM"):
        build_publisher(config)


def test_a_token_over_plaintext_beyond_loopback_is_warned_about(
    tokens: Tokens, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config("--hub", "10.1.2.3:50051", environ={"PAYNOTIFY_HUB_TOKEN": tokens.publisher})
    with caplog.at_level(logging.WARNING):
        build_publisher(config).close()
    assert "over plaintext gRPC" in caplog.text and tokens.publisher not in caplog.text
