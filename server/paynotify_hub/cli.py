"""`paynotify hub`: read flags, open the store, serve until SIGTERM/SIGINT, stop gracefully.

Prints one machine-readable line to stdout once it listens (tests and scripts wait for it):
`paynotify-hub listening on HOST:PORT`.

Security (docs/security.md): `--tls-cert/--tls-key [--tls-client-ca]` serve TLS (mutual with a
client CA); without TLS the hub listens beyond loopback only with `--insecure-plaintext`. Tokens per
role come from files (`--publisher-token-file`, `--subscriber-token-file GROUP=FILE`,
`--admin-token-file`, each repeatable for rotation) or from PAYNOTIFY_PUBLISHER_TOKEN,
PAYNOTIFY_ADMIN_TOKEN and PAYNOTIFY_SUBSCRIBER_TOKEN=GROUP=TOKEN[,...].
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import grpc

from paynotify_hub.config import (
    DEFAULT_ACK_DEADLINE,
    DEFAULT_LISTEN,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_RETENTION,
    DEFAULT_STORE_URL,
    LEASE_CHECK_INTERVAL,
    POLL_INTERVAL,
    SHUTDOWN_GRACE,
    HubConfig,
    TlsFiles,
    check_transport,
    parse_group,
)
from paynotify_hub.domain import GroupSpec, RetryPolicy
from paynotify_hub.errors import ConfigError, HubError
from paynotify_hub.server import create_server
from paynotify_hub.store import StoreError, open_store
from paynotify_hub.tls import server_credentials
from paynotify_hub.tokens import (
    Credential,
    Principal,
    Role,
    TokenTable,
    parse_principal,
    read_token_file,
    tokens_from_env,
)

__all__ = ["add_arguments", "build_config", "run"]

logger = logging.getLogger(__name__)

_DEFAULT_RETRY = RetryPolicy()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(
        "--listen",
        default=DEFAULT_LISTEN,
        help=f"HOST:PORT to serve gRPC on (default {DEFAULT_LISTEN})",
    )
    add(
        "--store",
        default=DEFAULT_STORE_URL,
        help="sqlite:///PATH (one hub) or postgresql://... (several hubs); "
        f"default {DEFAULT_STORE_URL}",
    )
    add(
        "--group",
        action="append",
        type=_group_arg,
        default=[],
        metavar="NAME[:required|:best-effort][:TYPES]",
        help="declare a subscriber group (repeatable); required unless :best-effort; "
        "TYPES filters notifyTypes, e.g. billing:required:PAYMENT_RESULT+OFFLINE_PAYMENT_CODE",
    )
    add(
        "--max-attempts",
        type=int,
        default=_DEFAULT_RETRY.max_attempts,
        help=f"deliveries per group before a dead letter (default {_DEFAULT_RETRY.max_attempts})",
    )
    add(
        "--min-backoff",
        type=float,
        default=_DEFAULT_RETRY.min_backoff,
        help=f"seconds before the first redelivery (default {_DEFAULT_RETRY.min_backoff:g})",
    )
    add(
        "--max-backoff",
        type=float,
        default=_DEFAULT_RETRY.max_backoff,
        help=f"cap of the doubling redelivery backoff (default {_DEFAULT_RETRY.max_backoff:g})",
    )
    add(
        "--ack-deadline",
        type=float,
        default=DEFAULT_ACK_DEADLINE,
        help=f"default lease seconds of a stream (default {DEFAULT_ACK_DEADLINE:g})",
    )
    add(
        "--max-in-flight",
        type=int,
        default=DEFAULT_MAX_IN_FLIGHT,
        help=f"default unacked deliveries per stream (default {DEFAULT_MAX_IN_FLIGHT})",
    )
    add(
        "--retention-hours",
        type=float,
        default=DEFAULT_RETENTION / 3600,
        help="keep settled notifications this long, at least 24 "
        f"(default {DEFAULT_RETENTION / 3600:g})",
    )
    add(
        "--metrics-listen",
        default="",
        metavar="HOST:PORT",
        help="serve Prometheus metrics there (default: off)",
    )
    add(
        "--poll-interval",
        type=float,
        default=POLL_INTERVAL,
        help=f"safety poll of the store in seconds (default {POLL_INTERVAL:g})",
    )
    add(
        "--lease-check-interval",
        type=float,
        default=LEASE_CHECK_INTERVAL,
        help=f"how often expired leases are collected (default {LEASE_CHECK_INTERVAL:g})",
    )
    add("--shutdown-grace", type=float, default=SHUTDOWN_GRACE,
        help=f"seconds for acks to land on SIGTERM (default {SHUTDOWN_GRACE:g})")  # fmt: skip
    _add_security_arguments(parser)


def _add_security_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--tls-cert", type=Path, metavar="FILE", help="serve TLS: certificate chain (PEM)")
    add("--tls-key", type=Path, metavar="FILE", help="serve TLS: private key (PEM, chmod 600)")
    add(
        "--tls-client-ca",
        type=Path,
        metavar="FILE",
        help="mutual TLS: only clients with a certificate signed by this CA (PEM) may connect",
    )
    add(
        "--insecure-plaintext",
        action="store_true",
        help="serve plaintext gRPC beyond loopback (tokens and payments readable on the network)",
    )
    add(
        "--publisher-token-file",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="a token of the bridge (may Publish); repeatable, to rotate",
    )
    add(
        "--subscriber-token-file",
        action="append",
        default=[],
        metavar="GROUP=FILE",
        help="a token of GROUP's subscribers (may Subscribe to GROUP only); repeatable",
    )
    add(
        "--admin-token-file",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="a token of operators (may call the admin RPCs only); repeatable, to rotate",
    )


def _group_arg(text: str) -> GroupSpec:
    try:
        return parse_group(text)
    except HubError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_config(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> HubConfig:
    """HubConfig from parsed flags (token values also from `environ`, default os.environ); raises
    ConfigError with a message for the operator."""
    groups = tuple(g if isinstance(g, GroupSpec) else parse_group(g) for g in args.group)
    return HubConfig(
        groups=groups,
        listen=args.listen,
        store_url=args.store,
        retry=RetryPolicy(
            min_backoff=args.min_backoff,
            max_backoff=args.max_backoff,
            max_attempts=args.max_attempts,
        ),
        default_max_in_flight=args.max_in_flight,
        default_ack_deadline=args.ack_deadline,
        min_ack_deadline=min(args.ack_deadline, 1.0),
        retention=args.retention_hours * 3600,
        metrics_listen=args.metrics_listen or None,
        poll_interval=args.poll_interval,
        lease_check_interval=args.lease_check_interval,
        shutdown_grace=args.shutdown_grace,
        tls=_tls_files(args),
        insecure_plaintext=args.insecure_plaintext,
        tokens=TokenTable(
            (*_token_files(args), *tokens_from_env(os.environ if environ is None else environ))
        ),
    )


def _tls_files(args: argparse.Namespace) -> TlsFiles | None:
    if args.tls_cert is None and args.tls_key is None:
        if args.tls_client_ca is not None:
            raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise ConfigError("give both --tls-cert and --tls-key")
    return TlsFiles(args.tls_cert, args.tls_key, args.tls_client_ca)


def _token_files(args: argparse.Namespace) -> Iterator[Credential]:
    for path in args.publisher_token_file:
        yield Credential(Principal(Role.PUBLISHER), read_token_file(Path(path)), str(path))
    for path in args.admin_token_file:
        yield Credential(Principal(Role.ADMIN), read_token_file(Path(path)), str(path))
    for item in args.subscriber_token_file:
        group, sep, path = str(item).partition("=")
        if not sep or not path:
            raise ConfigError(f"--subscriber-token-file {item!r}: expected GROUP=FILE")
        principal = parse_principal(f"subscriber:{group.strip()}")
        yield Credential(principal, read_token_file(Path(path)), path)


def run(args: argparse.Namespace) -> int:
    """0 after a graceful stop; 2 for bad configuration; 1 when the store or address fails."""
    try:
        config = build_config(args)
        check_transport(config)
        credentials = server_credentials(config.tls) if config.tls is not None else None
    except HubError as exc:
        print(f"paynotify hub: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(serve(config, credentials))
    except (HubError, StoreError) as exc:
        logger.error("hub stopped: %s", exc)
        print(f"paynotify hub: {exc}", file=sys.stderr)
        return 1


async def serve(config: HubConfig, credentials: grpc.ServerCredentials | None = None) -> int:
    """Run the hub until SIGTERM or SIGINT, then stop it gracefully (over TLS with the
    `credentials` loaded from `config.tls`)."""
    _make_sqlite_folder(config.store_url)
    store = open_store(config.store_url)
    await store.open()
    try:
        hub = create_server(config, store, credentials=credentials)
        await hub.start()
        stop = _stop_event()
        logger.info("hub listening on %s, groups %s", hub.address, _describe(config))
        print(f"paynotify-hub listening on {hub.address}", flush=True)
        await stop.wait()
        logger.info("stopping: letting acks land for up to %.1fs", config.shutdown_grace)
        await hub.stop()
    finally:
        await store.close()
    logger.info("hub stopped")
    return 0


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _make_sqlite_folder(url: str) -> None:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


def _describe(config: HubConfig) -> str:
    return ", ".join(
        f"{g.name} ({'required' if g.required else 'best-effort'})" for g in config.groups
    )
