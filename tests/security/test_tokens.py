"""Tokens per role, pure: secrets that do not show, constant-time comparison, token files."""

from __future__ import annotations

import hmac
import logging
import os
from pathlib import Path

import pytest

from paynotify_hub import tokens as tokens_module
from paynotify_hub.config import HubConfig
from paynotify_hub.domain import GroupSpec
from paynotify_hub.errors import ConfigError
from paynotify_hub.tokens import (
    Credential,
    Principal,
    Role,
    Secret,
    TokenTable,
    constant_time_equals,
    parse_principal,
    read_token_file,
    tokens_from_env,
)
from tests.hubkit import token_table
from tests.security.conftest import write_token

TOKEN = "s3cr3t-" + "x" * 40


def test_a_secret_never_shows_its_value() -> None:
    secret = Secret(TOKEN)
    for shown in (repr(secret), str(secret), f"{secret}", f"{secret!r}", "%s" % secret):  # noqa: UP031
        assert TOKEN not in shown
    assert secret.reveal() == TOKEN
    assert secret == Secret(TOKEN) and secret != Secret(TOKEN + "y")


def test_configs_do_not_show_tokens() -> None:
    table = token_table({"publisher": TOKEN, "subscriber:billing": TOKEN + "b"})
    config = HubConfig(groups=(GroupSpec("billing"),), tokens=table)
    assert TOKEN not in repr(config) and TOKEN not in str(config)
    assert "publisher x1" in repr(table) and "subscriber:billing x1" in repr(table)


def test_authenticate_finds_the_principal_of_a_token() -> None:
    table = token_table({"publisher": "p" * 20, "subscriber:billing": "b" * 20, "admin": "a" * 20})
    assert table.authenticate("p" * 20) == Principal(Role.PUBLISHER)
    assert table.authenticate("b" * 20) == Principal(Role.SUBSCRIBER, "billing")
    assert table.authenticate("a" * 20) == Principal(Role.ADMIN)
    assert table.authenticate("p" * 19) is None
    assert table.authenticate("") is None
    assert not TokenTable().enabled and table.enabled


def test_comparison_is_hmac_compare_digest_over_every_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tokens_module.hmac, "compare_digest", spy)
    table = token_table({"publisher": "p" * 20, "admin": "a" * 20})
    assert table.authenticate("p" * 20) == Principal(Role.PUBLISHER)
    # Every configured token is compared, even after a match: timing does not tell which matched.
    assert len(calls) == 2
    assert constant_time_equals("abc", "abc") and not constant_time_equals("abc", "abd")


def test_one_token_cannot_serve_two_roles() -> None:
    with pytest.raises(ConfigError, match="same token") as caught:
        token_table({"publisher": TOKEN, "admin": TOKEN})
    assert TOKEN not in str(caught.value)
    same_role_twice = TokenTable(
        (
            Credential(Principal(Role.ADMIN), Secret(TOKEN), "a"),
            Credential(Principal(Role.ADMIN), Secret(TOKEN), "b"),
        )
    )
    assert same_role_twice.authenticate(TOKEN) == Principal(Role.ADMIN)


def test_a_subscriber_token_must_name_a_declared_group() -> None:
    with pytest.raises(ConfigError, match="not declared"):
        HubConfig(groups=(GroupSpec("billing"),), tokens=token_table({"subscriber:audit": TOKEN}))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("publisher", Principal(Role.PUBLISHER)),
        ("admin", Principal(Role.ADMIN)),
        ("subscriber:billing", Principal(Role.SUBSCRIBER, "billing")),
    ],
)
def test_parse_principal(text: str, expected: Principal) -> None:
    assert parse_principal(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize("text", ["root", "subscriber", "admin:billing", "subscriber:Bad Name"])
def test_parse_principal_refuses(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_principal(text)


def test_token_files_drop_trailing_whitespace(tmp_path: Path) -> None:
    path = write_token(tmp_path, "t", TOKEN + "  \r\n\n")
    assert read_token_file(path).reveal() == TOKEN


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty"),
        (" \n", "empty"),
        ("Zq9Zq9", "shorter than 16"),
        ("two words in one token", "printable ASCII"),
        ("caf\u00e9" * 8, "printable ASCII"),
    ],
)
def test_token_files_that_cannot_be_tokens_are_refused(
    tmp_path: Path, content: str, message: str
) -> None:
    path = write_token(tmp_path, "t", "")
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as caught:
        read_token_file(path)
    if content.strip():
        assert content.strip() not in str(caught.value)


def test_a_missing_token_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read it"):
        read_token_file(tmp_path / "nope")


def test_a_token_file_readable_by_others_is_used_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_token(tmp_path, "t", TOKEN)
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING):
        assert read_token_file(path).reveal() == TOKEN
    assert "readable by group or others" in caplog.text and TOKEN not in caplog.text


def test_tokens_from_the_environment() -> None:
    env = {
        "PAYNOTIFY_PUBLISHER_TOKEN": "p" * 20,
        "PAYNOTIFY_ADMIN_TOKEN": "a" * 20,
        "PAYNOTIFY_SUBSCRIBER_TOKEN": f"billing={'b' * 20}, audit={'c' * 20}",
    }
    table = TokenTable(tokens_from_env(env))
    assert table.authenticate("b" * 20) == Principal(Role.SUBSCRIBER, "billing")
    assert table.authenticate("c" * 20) == Principal(Role.SUBSCRIBER, "audit")
    assert table.authenticate("a" * 20) == Principal(Role.ADMIN)
    assert tokens_from_env({}) == ()
    with pytest.raises(ConfigError, match="GROUP=TOKEN"):
        tokens_from_env({"PAYNOTIFY_SUBSCRIBER_TOKEN": "b" * 20})
