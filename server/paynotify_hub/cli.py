"""`paynotify hub`: read flags, open the store, serve until SIGTERM/SIGINT, stop gracefully.

Prints one machine-readable line to stdout once it listens (tests and scripts wait for it):
`paynotify-hub listening on HOST:PORT`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

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
    parse_group,
)
from paynotify_hub.domain import GroupSpec, RetryPolicy
from paynotify_hub.errors import HubError
from paynotify_hub.server import create_server
from paynotify_hub.store import StoreError, open_store

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


def _group_arg(text: str) -> GroupSpec:
    try:
        return parse_group(text)
    except HubError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_config(args: argparse.Namespace) -> HubConfig:
    """HubConfig from parsed flags; raises ConfigError with a message for the operator."""
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
    )


def run(args: argparse.Namespace) -> int:
    """0 after a graceful stop; 2 for bad configuration; 1 when the store or address fails."""
    try:
        config = build_config(args)
    except HubError as exc:
        print(f"paynotify hub: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(serve(config))
    except (HubError, StoreError) as exc:
        logger.error("hub stopped: %s", exc)
        print(f"paynotify hub: {exc}", file=sys.stderr)
        return 1


async def serve(config: HubConfig) -> int:
    """Run the hub until SIGTERM or SIGINT, then stop it gracefully."""
    _make_sqlite_folder(config.store_url)
    store = open_store(config.store_url)
    await store.open()
    try:
        hub = create_server(config, store)
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
