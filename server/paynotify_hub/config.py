"""The hub's configuration: one frozen dataclass, defaults in named constants, validated once.

Built by `paynotify_hub.cli` from flags (and PAYNOTIFY_<FLAG> environment variables), or directly
by tests (`tests/hubkit.py`). Never read at import time.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from paynotify_hub.domain import GROUP_NAME_PATTERN, GroupSpec, RetryPolicy
from paynotify_hub.errors import ConfigError
from paynotify_hub.tokens import Role, TokenTable

__all__ = [
    "DEFAULT_LISTEN",
    "DEFAULT_STORE_URL",
    "MIN_RETENTION",
    "HubConfig",
    "TlsFiles",
    "check_transport",
    "is_loopback_host",
    "parse_group",
    "parse_groups",
    "split_host_port",
]

DEFAULT_LISTEN = "0.0.0.0:50051"
DEFAULT_STORE_URL = "sqlite:///data/hub.db"
DEFAULT_MAX_IN_FLIGHT = 64
MAX_MAX_IN_FLIGHT = 1000
DEFAULT_ACK_DEADLINE = 30.0
MIN_ACK_DEADLINE = 1.0
MAX_ACK_DEADLINE = 600.0
# Publish answers PENDING this long before the caller's deadline, so the answer arrives in time.
PUBLISH_MARGIN = 0.25
# How long Publish waits when the caller set no deadline.
PUBLISH_MAX_WAIT = 10.0
# Safety poll: a lost wake-up delays work by at most this long.
POLL_INTERVAL = 1.0
LEASE_CHECK_INTERVAL = 0.5
SHUTDOWN_GRACE = 5.0
# Alipay retries for 24 hours: a settled notification purged sooner would be delivered again.
MIN_RETENTION = 24 * 3600.0
DEFAULT_RETENTION = 7 * 24 * 3600.0
PURGE_INTERVAL = 3600.0
PURGE_BATCH = 500
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_NOTIFICATION_BYTES = 256 * 1024
# A Delivery's fields beside the notification and its raw JSON (ids, timestamps, framing).
DELIVERY_SLACK_BYTES = 4096
STORE_TIMEOUT = 10.0
# How often the admin gauges (queue depth, oldest unacked age, ...) are read from the store.
ADMIN_REFRESH_INTERVAL = 15.0

_NOTIFY_TYPE_PATTERN = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
_MODES = {"required": True, "best-effort": False}


@dataclass(frozen=True)
class TlsFiles:
    """The hub's TLS material, as PEM files: its certificate chain and private key, and with
    `client_ca` mutual TLS (only clients with a certificate signed by that CA may connect)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None


@dataclass(frozen=True)
class HubConfig:
    """Everything one hub process needs; times in seconds.

    `groups` must name at least one group: without one, no Publish could ever be acknowledged.
    """

    groups: tuple[GroupSpec, ...]
    listen: str = DEFAULT_LISTEN
    store_url: str = DEFAULT_STORE_URL
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    default_max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    max_max_in_flight: int = MAX_MAX_IN_FLIGHT
    default_ack_deadline: float = DEFAULT_ACK_DEADLINE
    min_ack_deadline: float = MIN_ACK_DEADLINE
    max_ack_deadline: float = MAX_ACK_DEADLINE
    publish_margin: float = PUBLISH_MARGIN
    publish_max_wait: float = PUBLISH_MAX_WAIT
    poll_interval: float = POLL_INTERVAL
    lease_check_interval: float = LEASE_CHECK_INTERVAL
    shutdown_grace: float = SHUTDOWN_GRACE
    metrics_listen: str | None = None
    retention: float = DEFAULT_RETENTION
    purge_interval: float = PURGE_INTERVAL
    purge_batch: int = PURGE_BATCH
    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_notification_bytes: int = MAX_NOTIFICATION_BYTES
    store_timeout: float = STORE_TIMEOUT
    # Names this hub in member ids (several hubs may share one store); empty: host and pid.
    hub_id: str = ""
    admin_refresh_interval: float = ADMIN_REFRESH_INTERVAL
    # None: plaintext, allowed beyond loopback only with `insecure_plaintext` (see check_transport).
    tls: TlsFiles | None = None
    insecure_plaintext: bool = False
    # Empty: no token checked (loopback development, tests). Its repr never shows a token.
    tokens: TokenTable = field(default_factory=TokenTable)

    def __post_init__(self) -> None:
        _check_groups(self.groups)
        _check_token_groups(self.tokens, self.groups)
        _check_retry(self.retry)
        _check_positive(
            default_max_in_flight=self.default_max_in_flight,
            max_max_in_flight=self.max_max_in_flight,
            min_ack_deadline=self.min_ack_deadline,
            poll_interval=self.poll_interval,
            lease_check_interval=self.lease_check_interval,
            publish_max_wait=self.publish_max_wait,
            purge_interval=self.purge_interval,
            purge_batch=self.purge_batch,
            max_message_bytes=self.max_message_bytes,
            max_notification_bytes=self.max_notification_bytes,
            store_timeout=self.store_timeout,
            admin_refresh_interval=self.admin_refresh_interval,
        )
        _check_order("ack deadlines", self.min_ack_deadline, self.default_ack_deadline)
        _check_order("ack deadlines", self.default_ack_deadline, self.max_ack_deadline)
        _check_order("max in flight", self.default_max_in_flight, self.max_max_in_flight)
        if self.publish_margin < 0 or self.shutdown_grace < 0:
            raise ConfigError("publish_margin and shutdown_grace must not be negative")
        if 2 * self.max_notification_bytes + DELIVERY_SLACK_BYTES > self.max_message_bytes:
            raise ConfigError(
                f"max_message_bytes ({self.max_message_bytes}) must hold one delivery: twice "
                f"max_notification_bytes ({self.max_notification_bytes}, the notification and "
                f"its raw JSON again) plus {DELIVERY_SLACK_BYTES}"
            )
        if self.retention < MIN_RETENTION:
            raise ConfigError(
                f"retention must be at least 24 hours (got {self.retention / 3600:g} h): Alipay "
                "retries for 24 hours, and a notification purged sooner would be delivered again"
            )
        split_host_port(self.listen)
        if self.metrics_listen:
            split_host_port(self.metrics_listen)

    def group(self, name: str) -> GroupSpec | None:
        return next((g for g in self.groups if g.name == name), None)

    @property
    def listens_on_loopback(self) -> bool:
        return is_loopback_host(split_host_port(self.listen)[0])


def check_transport(config: HubConfig) -> None:
    """Refuse plaintext gRPC beyond loopback unless `insecure_plaintext` says so explicitly:
    tokens, payment data and acks would cross the network readable and forgeable."""
    if config.tls is None and not config.insecure_plaintext and not config.listens_on_loopback:
        raise ConfigError(
            f"refusing to serve plaintext gRPC on {config.listen}: give --tls-cert and --tls-key "
            "(and --tls-client-ca for mutual TLS), listen on loopback (--listen 127.0.0.1:PORT), "
            "or accept the risk explicitly with --insecure-plaintext"
        )


def is_loopback_host(host: str) -> bool:
    """`localhost`, 127.0.0.0/8 or ::1 (also as `[::1]`); a wildcard address is not loopback."""
    host = host.removeprefix("[").removesuffix("]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_group(text: str) -> GroupSpec:
    """`NAME`, `NAME:required`, `NAME:best-effort`, or with a type filter
    `NAME:required:PAYMENT_RESULT+OFFLINE_PAYMENT_CODE`. Required unless it says otherwise.
    """
    name, _, rest = text.strip().partition(":")
    mode, _, types_text = rest.partition(":")
    if not GROUP_NAME_PATTERN.match(name):
        raise ConfigError(
            f"invalid group name {name!r} in {text!r}: use 1-63 of a-z 0-9 . _ -, "
            "starting with a letter or digit"
        )
    if mode and mode not in _MODES:
        raise ConfigError(
            f"invalid group mode {mode!r} in {text!r}: use NAME, NAME:required or NAME:best-effort"
        )
    types = frozenset(t for t in types_text.split("+") if t)
    bad = sorted(t for t in types if not _NOTIFY_TYPE_PATTERN.match(t))
    if bad:
        raise ConfigError(
            f"invalid notifyType {bad[0]!r} in {text!r}: "
            "use e.g. PAYMENT_RESULT+OFFLINE_PAYMENT_CODE"
        )
    return GroupSpec(name=name, required=_MODES.get(mode, True), notify_types=types)


def parse_groups(texts: Iterable[str]) -> tuple[GroupSpec, ...]:
    return tuple(parse_group(t) for t in texts)


def split_host_port(address: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:PORT`) into its parts; port 0 asks for any free port."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"invalid address {address!r}: use HOST:PORT, e.g. 0.0.0.0:50051")
    return host, int(port_text)


def _check_groups(groups: tuple[GroupSpec, ...]) -> None:
    if not groups:
        raise ConfigError(
            "declare at least one group (--group NAME[:required|:best-effort]): "
            "without one, no notification could ever be acknowledged"
        )
    names = [g.name for g in groups]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"group {duplicates[0]!r} is declared more than once")
    for g in groups:
        if not GROUP_NAME_PATTERN.match(g.name):
            raise ConfigError(f"invalid group name {g.name!r}")


def _check_token_groups(tokens: TokenTable, groups: tuple[GroupSpec, ...]) -> None:
    declared = {g.name for g in groups}
    for principal in sorted(tokens.principals(), key=str):
        if principal.role is Role.SUBSCRIBER and principal.group not in declared:
            raise ConfigError(
                f"a subscriber token is configured for group {principal.group!r}, which is not "
                "declared (--group)"
            )


def _check_retry(retry: RetryPolicy) -> None:
    if retry.max_attempts < 1:
        raise ConfigError("max attempts must be at least 1")
    if retry.min_backoff < 0 or retry.max_backoff < retry.min_backoff:
        raise ConfigError("backoff must satisfy 0 <= min backoff <= max backoff")


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ConfigError(f"{name} must be positive (got {value!r})")


def _check_order(what: str, low: float, high: float) -> None:
    if low > high:
        raise ConfigError(f"{what}: {low!r} must not exceed {high!r}")
