"""The security flags of `paynotify hub`, the operator's connection (connect.py) and `tail`."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from paynotify.v1 import admin_pb2, admin_pb2_grpc
from paynotify_cli.connect import Connection, ConnectionError_, add_connection_arguments
from paynotify_cli.main import build_parser
from paynotify_hub.cli import build_config
from paynotify_hub.config import HubConfig, TlsFiles, check_transport
from paynotify_hub.domain import GroupSpec
from paynotify_hub.errors import ConfigError
from paynotify_hub.server import create_server
from paynotify_hub.tokens import Principal, Role
from tests.hubkit import hub_in_thread
from tests.security.conftest import GROUPS, WRONG_TOKEN, Tokens, write_token
from tests.security.pki import Pki


def _hub_config(*flags: str, environ: dict[str, str] | None = None) -> HubConfig:
    args = build_parser().parse_args(["hub", "--group", "billing", *flags])
    return build_config(args, environ=environ or {})


# -- transport -------------------------------------------------------------------------------------


@pytest.mark.parametrize("listen", ["0.0.0.0:50051", "[::]:50051", "10.0.0.5:50051"])
def test_plaintext_beyond_loopback_is_refused_without_insecure_plaintext(
    listen: str, pki: Pki
) -> None:
    config = _hub_config("--listen", listen)
    with pytest.raises(ConfigError, match="refusing to serve plaintext gRPC") as caught:
        check_transport(config)
    assert "--insecure-plaintext" in str(caught.value)
    check_transport(_hub_config("--listen", listen, "--insecure-plaintext"))
    tls = ("--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key))
    check_transport(_hub_config("--listen", listen, *tls))


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "localhost:50051", "[::1]:50051"])
def test_loopback_stays_plaintext_without_flags(listen: str) -> None:
    check_transport(_hub_config("--listen", listen))


async def test_create_server_refuses_before_binding(tmp_path: Path) -> None:
    config = HubConfig(groups=(GroupSpec("billing"),), listen="0.0.0.0:0")
    with pytest.raises(ConfigError, match="refusing to serve plaintext"):
        create_server(config, store=None)  # type: ignore[arg-type]  # refused before any use


def test_the_hub_command_exits_2_for_plaintext_beyond_loopback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYNOTIFY_")}
    done = subprocess.run(
        [
            sys.executable, "-m", "paynotify_cli.main", "hub", "--listen", "0.0.0.0:0",
            "--group", "billing", "--store", f"sqlite:///{tmp_path / 'hub.db'}",
        ],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode == 2
    assert "refusing to serve plaintext gRPC on 0.0.0.0:0" in done.stderr
    assert not (tmp_path / "hub.db").exists()


def test_tls_flags_come_in_pairs(pki: Pki) -> None:
    with pytest.raises(ConfigError, match="both --tls-cert and --tls-key"):
        _hub_config("--tls-cert", str(pki.server.cert))
    with pytest.raises(ConfigError, match="--tls-client-ca needs"):
        _hub_config("--tls-client-ca", str(pki.ca))
    config = _hub_config(
        "--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key),
        "--tls-client-ca", str(pki.ca),
    )  # fmt: skip
    assert config.tls == TlsFiles(pki.server.cert, pki.server.key, pki.ca)
    assert config.tls.mutual


# -- token flags -------------------------------------------------------------------------------


def test_token_flags_and_environment(tmp_path: Path, tokens: Tokens) -> None:
    publisher = write_token(tmp_path, "p", tokens.publisher)
    rotated = write_token(tmp_path, "p2", "r" * 32)
    billing = write_token(tmp_path, "b", tokens.billing)
    admin = write_token(tmp_path, "a", tokens.admin)
    config = _hub_config(
        "--group", "audit:best-effort",
        "--publisher-token-file", str(publisher), "--publisher-token-file", str(rotated),
        "--subscriber-token-file", f"billing={billing}", "--admin-token-file", str(admin),
        environ={"PAYNOTIFY_SUBSCRIBER_TOKEN": f"audit={tokens.audit}"},
    )  # fmt: skip
    table = config.tokens
    assert table.authenticate(tokens.publisher) == Principal(Role.PUBLISHER)
    assert table.authenticate("r" * 32) == Principal(Role.PUBLISHER)
    assert table.authenticate(tokens.billing) == Principal(Role.SUBSCRIBER, "billing")
    assert table.authenticate(tokens.audit) == Principal(Role.SUBSCRIBER, "audit")
    assert table.authenticate(tokens.admin) == Principal(Role.ADMIN)
    for token in tokens.all():
        assert token not in repr(config)


def test_token_files_named_in_the_environment(
    tmp_path: Path, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYNOTIFY_ADMIN_TOKEN_FILE", str(write_token(tmp_path, "a", tokens.admin)))
    monkeypatch.setenv(
        "PAYNOTIFY_SUBSCRIBER_TOKEN_FILE", f"billing={write_token(tmp_path, 'b', tokens.billing)}"
    )
    config = build_config(build_parser().parse_args(["hub", "--group", "billing"]), environ={})
    assert config.tokens.principals() == {
        Principal(Role.ADMIN),
        Principal(Role.SUBSCRIBER, "billing"),
    }


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--subscriber-token-file", "billing"], "expected GROUP=FILE"),
        (["--subscriber-token-file", "audit=/dev/null"], "is empty"),
        (["--admin-token-file", "/nonexistent/token"], "cannot read it"),
    ],
)
def test_bad_token_flags_are_refused(flags: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _hub_config(*flags)


def test_a_subscriber_token_for_an_undeclared_group_is_refused(
    tmp_path: Path, tokens: Tokens
) -> None:
    path = write_token(tmp_path, "b", tokens.billing)
    with pytest.raises(ConfigError, match="not declared"):
        _hub_config("--subscriber-token-file", f"nosuch={path}")


# -- the operator's connection (connect.py) --------------------------------------------------------


def _connection_args(*flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_connection_arguments(parser)
    return parser.parse_args(list(flags))


def _status(connection: Connection, address: str) -> grpc.StatusCode:
    with connection.channel(address) as channel:
        try:
            admin_pb2_grpc.HubAdminStub(channel).Status(admin_pb2.StatusRequest(), timeout=5)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_the_admin_connection_over_mutual_tls_with_the_admin_token(
    tmp_path: Path, pki: Pki, tokens: Tokens, mtls: TlsFiles
) -> None:
    tls = (
        "--tls-ca", str(pki.ca), "--tls-cert", str(pki.client.cert),
        "--tls-key", str(pki.client.key),
    )  # fmt: skip
    admin_file = str(write_token(tmp_path, "admin.token", tokens.admin))
    with hub_in_thread(tmp_path, GROUPS, tls=mtls, tokens=tokens.table()) as hub:
        args = _connection_args("--hub", hub.address, *tls, "--token-file", admin_file)
        connection = Connection.from_args(args, environ={})
        assert tokens.admin not in repr(connection)
        assert _status(connection, hub.address) == grpc.StatusCode.OK
        from_env = Connection.from_args(
            _connection_args(*tls), environ={"PAYNOTIFY_TOKEN": tokens.admin}
        )
        assert _status(from_env, hub.address) == grpc.StatusCode.OK
        no_token = Connection.from_args(_connection_args(*tls), environ={})
        assert _status(no_token, hub.address) == grpc.StatusCode.UNAUTHENTICATED
        wrong = Connection.from_args(_connection_args(*tls), environ={"PAYNOTIFY_TOKEN": "x" * 20})
        assert _status(wrong, hub.address) == grpc.StatusCode.UNAUTHENTICATED
        publisher = Connection.from_args(
            _connection_args(*tls), environ={"PAYNOTIFY_TOKEN": tokens.publisher}
        )
        assert _status(publisher, hub.address) == grpc.StatusCode.PERMISSION_DENIED
        plaintext = Connection.from_args(_connection_args(), environ={})
        assert _status(plaintext, hub.address) == grpc.StatusCode.UNAVAILABLE


def test_the_admin_connection_refuses_bad_flags(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(ConnectionError_, match="need --tls-ca"):
        Connection.from_args(_connection_args("--tls-cert", str(pki.client.cert)), environ={})
    with pytest.raises(ConnectionError_, match="both"):
        Connection.from_args(
            _connection_args("--tls-ca", str(pki.ca), "--tls-cert", str(pki.client.cert)),
            environ={},
        )
    with pytest.raises(ConnectionError_, match="cannot read"):
        Connection.from_args(_connection_args("--token-file", str(tmp_path / "no")), environ={})


# -- paynotify tail ------------------------------------------------------------------------------


def test_tail_refuses_tls_flags_without_a_ca(pki: Pki) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYNOTIFY_")}
    done = subprocess.run(
        [
            sys.executable, "-m", "paynotify_cli.main", "tail", "--group", "billing",
            "--tls-cert", str(pki.client.cert), "--tls-key", str(pki.client.key),
        ],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode == 2 and "need --tls-ca" in done.stderr


def test_tail_with_a_wrong_token_exits_1(tmp_path: Path, tokens: Tokens) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYNOTIFY_")}
    token_file = write_token(tmp_path, "wrong", WRONG_TOKEN)
    with hub_in_thread(tmp_path, GROUPS, tokens=tokens.table()) as hub:
        done = subprocess.run(
            [
                sys.executable, "-m", "paynotify_cli.main", "tail", "--hub", hub.address,
                "--group", "billing", "--token-file", str(token_file),
            ],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
    assert done.returncode == 1 and "UNAUTHENTICATED" in done.stderr
    assert WRONG_TOKEN not in done.stderr


def test_the_hub_command_exits_2_for_unusable_tls_files(tmp_path: Path, pki: Pki) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYNOTIFY_")}
    done = subprocess.run(
        [
            sys.executable, "-m", "paynotify_cli.main", "hub", "--listen", "127.0.0.1:0",
            "--group", "billing", "--store", f"sqlite:///{tmp_path / 'hub.db'}",
            "--tls-cert", str(pki.server.cert), "--tls-key", str(pki.client.key),
        ],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode == 2
    assert "does not belong to the certificate" in done.stderr
    for line in pki.client.key_body_lines():
        assert line not in done.stderr
