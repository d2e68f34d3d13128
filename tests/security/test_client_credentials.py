"""The client library's credential helpers (paynotify_client.credentials)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from paynotify_client import Subscriber
from paynotify_client.credentials import (
    CredentialsError,
    bearer_metadata,
    is_loopback_target,
    read_token_file,
)
from tests.security.conftest import write_token

TOKEN = "t0ken-" + "z" * 30


@pytest.mark.parametrize(
    ("target", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("localhost:50051", True),
        ("[::1]:50051", True),
        ("dns:///localhost:50051", True),
        ("ipv4:127.0.0.1:1,127.0.0.2:2", True),
        ("ipv6:[::1]:50051", True),
        ("10.0.0.1:50051", False),
        ("ipv4:127.0.0.1:1,10.0.0.1:2", False),
        ("hub.internal:50051", False),
    ],
)
def test_is_loopback_target(target: str, loopback: bool) -> None:
    assert is_loopback_target(target) is loopback


def test_read_token_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert read_token_file(write_token(tmp_path, "t", TOKEN + " \n")) == TOKEN
    with pytest.raises(CredentialsError, match="empty"):
        read_token_file(write_token(tmp_path, "e", ""))
    with pytest.raises(CredentialsError, match="cannot read"):
        read_token_file(tmp_path / "missing")
    loose = write_token(tmp_path, "loose", TOKEN)
    os.chmod(loose, 0o644)
    with caplog.at_level(logging.WARNING):
        read_token_file(loose)
    assert "readable by group or others" in caplog.text and TOKEN not in caplog.text


def test_bearer_metadata() -> None:
    assert bearer_metadata(TOKEN) == (("authorization", f"Bearer {TOKEN}"),)
    assert bearer_metadata(None) == bearer_metadata("") == ()


def test_a_subscriber_does_not_show_its_token(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        subscriber = Subscriber("10.9.8.7:50051", "billing", token=TOKEN)
    assert TOKEN not in repr(subscriber)
    assert "over plaintext gRPC" in caplog.text and TOKEN not in caplog.text
    subscriber.close()
