"""A full secure run as real processes: `paynotify hub` with mutual TLS and tokens, `paynotify
bridge` and `paynotify tail` with their certificates and token files, the client library, a signed
POST answered SUCCESS, a forged token refused; then not one secret in any log."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from paynotify_bridge.cli import LISTENING_PREFIX
from paynotify_client import FlowControl, Subscriber
from paynotify_client.credentials import tls_credentials
from paynotify_hub.config import TlsFiles
from tests.bridge.conftest import (
    CLIENT_ID,
    SOON,
    SUCCESS_BODY,
    Keys,
    http_request,
    sample_body,
    signed_headers,
)
from tests.hubkit import hub_process, make_notification, publish
from tests.security.conftest import GROUPS, WRONG_TOKEN, Tokens, write_token
from tests.security.pki import Pki

pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PAYNOTIFY_")}


def _paynotify(*args: str) -> list[str]:
    return [sys.executable, "-m", "paynotify_cli.main", "--log-level", "DEBUG", *args]


def _client_tls_flags(pki: Pki, prefix: str) -> list[str]:
    return [
        f"--{prefix}tls-ca", str(pki.ca),
        f"--{prefix}tls-cert", str(pki.client.cert), f"--{prefix}tls-key", str(pki.client.key),
    ]  # fmt: skip


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(SOON)


def test_a_secure_run_end_to_end_leaks_no_secret(
    tmp_path: Path,
    pki: Pki,
    tokens: Tokens,
    alipay_keys: Keys,
    started: list[subprocess.Popen[str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    mtls = TlsFiles(pki.server.cert, pki.server.key, pki.ca)
    publisher_file = write_token(tmp_path, "publisher.token", tokens.publisher)
    audit_file = write_token(tmp_path, "audit.token", tokens.audit)
    with hub_process(
        tmp_path / "hub", groups=GROUPS, tls=mtls, tokens=tokens.table(), log_level="DEBUG"
    ) as hub:
        bridge_err = (tmp_path / "bridge.err").open("w")
        bridge = subprocess.Popen(
            _paynotify(
                "bridge", "--listen", "127.0.0.1:0", "--hub", hub.address,
                "--alipay-public-key", f"1={alipay_keys.public_path}", "--client-id", CLIENT_ID,
                "--publish-timeout", "5", *_client_tls_flags(pki, "hub-"),
                "--hub-token-file", str(publisher_file),
            ),
            stdout=subprocess.PIPE, stderr=bridge_err, text=True, env=_env(),
        )  # fmt: skip
        started.append(bridge)
        assert bridge.stdout is not None
        line = bridge.stdout.readline()
        match = re.fullmatch(re.escape(LISTENING_PREFIX) + r" (http://127\.0\.0\.1:\d+)\n", line)
        assert match, f"bridge did not start: {(tmp_path / 'bridge.err').read_text()}"
        tail_err = (tmp_path / "tail.err").open("w")
        tail = subprocess.Popen(
            _paynotify(
                "tail", "--hub", hub.address, "--group", "audit", "--count", "1",
                *_client_tls_flags(pki, ""), "--token-file", str(audit_file),
            ),
            stdout=subprocess.PIPE, stderr=tail_err, text=True, env=_env(),
        )  # fmt: skip
        started.append(tail)
        credentials = tls_credentials(pki.ca, pki.client.cert, pki.client.key)
        with Subscriber(
            hub.address,
            "billing",
            channel_credentials=credentials,
            token=tokens.billing,
            flow_control=FlowControl(max_in_flight=4),
        ) as subscriber:
            subscriber.subscribe(lambda message: message.ack())
            body = sample_body("payment_result_success")
            reply = http_request(
                match.group(1), "POST", "/alipay/notify", body, signed_headers(alipay_keys, body)
            )
            assert (reply.status, reply.body) == (200, SUCCESS_BODY)
            with pytest.raises(grpc.RpcError) as refused:
                n = make_notification()
                publish(hub.address, n, credentials=credentials, token=WRONG_TOKEN)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
        tail_out, _ = tail.communicate(timeout=30)
        assert tail.returncode == 0, (tmp_path / "tail.err").read_text()
        assert json.loads(tail_out)["notification"]["payment_id"] == "2020010123456789XXXX"
        bridge.terminate()
        assert bridge.wait(SOON) == 0
        hub.terminate()
        assert hub.wait() == 0
        hub_log = hub.log() + hub.stdout_path.read_text()
    bridge_err.close()
    tail_err.close()
    logs = {
        "hub": hub_log,
        "bridge": (tmp_path / "bridge.err").read_text(),
        "tail": (tmp_path / "tail.err").read_text(),
        "this process": caplog.text,
    }
    assert "gRPC over mutual TLS" in logs["hub"]
    assert "tokens configured for admin x1, publisher x1" in logs["hub"]
    assert "refused /paynotify.v1.NotificationHub/Publish" in logs["hub"]
    assert "mutual TLS, with a publisher token" in logs["bridge"]
    secrets = [*tokens.all(), WRONG_TOKEN]
    key_lines = pki.server.key_body_lines() + pki.client.key_body_lines()
    for name, text in logs.items():
        for secret in secrets:
            assert secret not in text, f"a token in the {name} log"
        for key_line in key_lines:
            assert key_line not in text, f"private key material in the {name} log"
