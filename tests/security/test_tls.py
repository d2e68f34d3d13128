"""gRPC over TLS and mutual TLS: a real hub on loopback, real clients, throwaway certificates."""

from __future__ import annotations

import logging
import os
import queue
import shutil
from pathlib import Path

import grpc
import pytest

from paynotify.v1 import hub_pb2
from paynotify_client import Message, Subscriber
from paynotify_client.credentials import CredentialsError, tls_credentials
from paynotify_hub.config import TlsFiles
from paynotify_hub.errors import ConfigError
from paynotify_hub.tls import server_credentials
from tests.hubkit import hub_in_thread, make_notification, publish, publish_async, running_hub
from tests.security.pki import Pki

PENDING = hub_pb2.PUBLISH_OUTCOME_PENDING
ACKED = hub_pb2.PUBLISH_OUTCOME_ACKNOWLEDGED


async def _publish_code(
    address: str,
    credentials: grpc.ChannelCredentials | None,
    options: tuple[tuple[str, str], ...] = (),
) -> grpc.StatusCode:
    """OK when a Publish got through (it answers PENDING: nobody subscribes), else the status."""
    try:
        response = await publish_async(
            address, make_notification(), timeout=1.0, credentials=credentials, options=options
        )
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    assert response.outcome == PENDING
    return grpc.StatusCode.OK


def test_tls_end_to_end_with_the_client_library(
    tmp_path: Path, tls: TlsFiles, client_tls: grpc.ChannelCredentials
) -> None:
    received: queue.Queue[Message] = queue.Queue()

    def handle(message: Message) -> None:
        message.ack()
        received.put(message)

    with (
        hub_in_thread(tmp_path, tls=tls) as hub,
        Subscriber(hub.address, "billing", channel_credentials=client_tls) as subscriber,
    ):
        subscriber.subscribe(handle)
        response = publish(hub.address, make_notification(), timeout=10, credentials=client_tls)
        assert response.outcome == ACKED
        assert received.get(timeout=5).notification.payment_id


async def test_a_plaintext_client_cannot_talk_to_a_tls_hub(tmp_path: Path, tls: TlsFiles) -> None:
    async with running_hub(tmp_path, tls=tls) as hub:
        assert await _publish_code(hub.address, None) == grpc.StatusCode.UNAVAILABLE


async def test_a_client_trusting_another_ca_refuses_the_hub(
    tmp_path: Path, tls: TlsFiles, pki: Pki
) -> None:
    async with running_hub(tmp_path, tls=tls) as hub:
        wrong = grpc.ssl_channel_credentials(pki.rogue_ca_pem)
        assert await _publish_code(hub.address, wrong) == grpc.StatusCode.UNAVAILABLE


async def test_a_hub_with_a_certificate_of_another_ca_is_refused(
    tmp_path: Path, pki: Pki, client_tls: grpc.ChannelCredentials
) -> None:
    rogue = TlsFiles(pki.rogue_server.cert, pki.rogue_server.key)
    async with running_hub(tmp_path, tls=rogue) as hub:
        assert await _publish_code(hub.address, client_tls) == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_admits_only_clients_with_a_certificate_of_the_client_ca(
    tmp_path: Path,
    mtls: TlsFiles,
    pki: Pki,
    client_tls: grpc.ChannelCredentials,
    client_mtls: grpc.ChannelCredentials,
) -> None:
    rogue_client = grpc.ssl_channel_credentials(
        pki.ca_pem, pki.rogue_client.key.read_bytes(), pki.rogue_client.cert.read_bytes()
    )
    async with running_hub(tmp_path, tls=mtls) as hub:
        assert await _publish_code(hub.address, client_mtls) == grpc.StatusCode.OK
        assert await _publish_code(hub.address, client_tls) == grpc.StatusCode.UNAVAILABLE
        assert await _publish_code(hub.address, rogue_client) == grpc.StatusCode.UNAVAILABLE


async def test_tls_credentials_helper_reads_the_files(
    tmp_path: Path, mtls: TlsFiles, pki: Pki
) -> None:
    credentials = tls_credentials(pki.ca, pki.client.cert, pki.client.key)
    async with running_hub(tmp_path, tls=mtls) as hub:
        assert await _publish_code(hub.address, credentials) == grpc.StatusCode.OK
    with pytest.raises(CredentialsError, match="both"):
        tls_credentials(pki.ca, pki.client.cert)
    with pytest.raises(CredentialsError, match="cannot read"):
        tls_credentials(tmp_path / "missing.pem")
    with pytest.raises(CredentialsError, match="not a PEM"):
        tls_credentials(pki.ca, pki.client.cert, tmp_path / "hub.db")


async def test_a_certificate_naming_another_host_needs_the_server_name(
    tmp_path: Path, pki: Pki, client_tls: grpc.ChannelCredentials
) -> None:
    named = TlsFiles(pki.named_server.cert, pki.named_server.key)
    async with running_hub(tmp_path, tls=named) as hub:
        assert await _publish_code(hub.address, client_tls) == grpc.StatusCode.UNAVAILABLE
        override = (("grpc.ssl_target_name_override", "hub.internal"),)
        assert await _publish_code(hub.address, client_tls, override) == grpc.StatusCode.OK


# -- the hub's TLS files, checked at start ---------------------------------------------------


def _refusal(tls: TlsFiles) -> str:
    with pytest.raises(ConfigError) as caught:
        server_credentials(tls)
    return str(caught.value)


def test_tls_files_are_checked_before_serving(tmp_path: Path, pki: Pki) -> None:
    mismatched = _refusal(TlsFiles(pki.server.cert, pki.client.key))
    assert "does not belong to the certificate" in mismatched
    assert "expired" in _refusal(TlsFiles(pki.expired_server.cert, pki.expired_server.key))
    assert "cannot read" in _refusal(TlsFiles(tmp_path / "none.pem", pki.server.key))
    assert "not a PEM certificate" in _refusal(TlsFiles(pki.server.key, pki.server.key))
    not_a_key = _refusal(TlsFiles(pki.server.cert, pki.server.cert))
    assert "not an unencrypted PEM private key" in not_a_key
    client_ca = _refusal(TlsFiles(pki.server.cert, pki.server.key, tmp_path / "no-ca.pem"))
    assert "--tls-client-ca" in client_ca
    for message in (mismatched, not_a_key):
        for line in pki.server.key_body_lines() + pki.client.key_body_lines():
            assert line not in message


def test_a_key_readable_by_others_is_used_with_a_warning(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    key = tmp_path / "open.key"
    shutil.copy(pki.server.key, key)
    os.chmod(key, 0o644)
    with caplog.at_level(logging.WARNING, logger="paynotify_hub.tls"):
        server_credentials(TlsFiles(pki.server.cert, key))
    assert "readable by group or others" in caplog.text
