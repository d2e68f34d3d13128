"""The bridge's configuration: a frozen dataclass, defaults in named constants, checked on creation.

Built from `paynotify bridge` flags (see `cli.py`) or directly in tests; never read at import time.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from paynotify_bridge.ack_cache import DEFAULT_ACK_CACHE_SIZE, DEFAULT_ACK_CACHE_TTL

__all__ = [
    "DEFAULT_ACK_CACHE_SIZE",
    "DEFAULT_ACK_CACHE_TTL",
    "DEFAULT_CHANNEL_TIMEOUT",
    "DEFAULT_CONNECTION_LIMIT",
    "DEFAULT_HUB",
    "DEFAULT_LISTEN",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_PATH",
    "DEFAULT_PUBLISH_TIMEOUT",
    "DEFAULT_THREADS",
    "MAX_PUBLISH_TIMEOUT",
    "MIN_PUBLISH_TIMEOUT",
    "BridgeConfig",
    "ConfigError",
    "KeySource",
    "is_loopback",
    "parse_hubs",
    "parse_key_source",
    "parse_listen",
]

DEFAULT_LISTEN: Final = "0.0.0.0:8080"
DEFAULT_PATH: Final = "/alipay/notify"
DEFAULT_HUB: Final = "127.0.0.1:50051"
# How long one request waits for the hub's answer. Alipay's own timeout is undocumented; "a few
# seconds" keeps us well inside any plausible one. Bounded both ways: below the minimum a healthy
# subscriber cannot ack in time, above the maximum Alipay has long given up.
DEFAULT_PUBLISH_TIMEOUT: Final = 5.0
MIN_PUBLISH_TIMEOUT: Final = 0.2
MAX_PUBLISH_TIMEOUT: Final = 30.0
# Alipay's notifications are a few hundred bytes; 64 KiB leaves room for anything it may add.
DEFAULT_MAX_BODY_BYTES: Final = 64 * 1024
MAX_MAX_BODY_BYTES: Final = 16 * 1024 * 1024
# Each notify request holds a waitress thread for up to publish_timeout while the hub waits for
# acks; 32 threads keep /healthz, /readyz and quick rejections answered while many wait.
DEFAULT_THREADS: Final = 32
DEFAULT_CONNECTION_LIMIT: Final = 512
# Seconds an idle (keep-alive) connection stays open.
DEFAULT_CHANNEL_TIMEOUT: Final = 30
# 64 bytes per entry: a million is 64 MB (each generation maps its half when it takes its
# first entry), more than any bridge needs.
MAX_ACK_CACHE_SIZE: Final = 1_000_000
# Below Alipay's first retry (2 minutes) the cache would never answer one; a day covers the
# whole retry schedule (about 25 hours).
MIN_ACK_CACHE_TTL: Final = 120.0
MAX_ACK_CACHE_TTL: Final = 86_400.0


class ConfigError(ValueError):
    """A setting that cannot work; the message says which flag and why."""


@dataclass(frozen=True)
class KeySource:
    """One `--alipay-public-key [VERSION=]FILE`: `version` None means "any keyVersion"."""

    path: Path
    version: str | None = None

    def __str__(self) -> str:
        return f"{self.version}={self.path}" if self.version else str(self.path)


@dataclass(frozen=True)
class BridgeConfig:
    """Everything `paynotify bridge` needs; invalid combinations raise `ConfigError`."""

    listen: str = DEFAULT_LISTEN
    path: str = DEFAULT_PATH
    hubs: tuple[str, ...] = (DEFAULT_HUB,)
    public_keys: tuple[KeySource, ...] = ()
    client_ids: tuple[str, ...] = ()
    publish_timeout: float = DEFAULT_PUBLISH_TIMEOUT
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    threads: int = DEFAULT_THREADS
    connection_limit: int = DEFAULT_CONNECTION_LIMIT
    channel_timeout: int = DEFAULT_CHANNEL_TIMEOUT
    # Bodies answered SUCCESS remembered for Alipay's retries (ack_cache.py); 0 entries: off.
    ack_cache_size: int = DEFAULT_ACK_CACHE_SIZE
    ack_cache_ttl: float = DEFAULT_ACK_CACHE_TTL
    # Local development only: accept unsigned requests. Logged loudly at start and on every request.
    insecure_skip_verification: bool = False
    # The hub over TLS when `hub_tls` or `hub_tls_ca` (None: the system's CAs) is set; with cert
    # and key, mutual TLS (docs/security.md).
    hub_tls: bool = False
    hub_tls_ca: Path | None = None
    hub_tls_cert: Path | None = None
    hub_tls_key: Path | None = None
    # The name in the hub's certificate when it differs from the --hub host (e.g. several hubs).
    hub_tls_server_name: str | None = None
    # The publisher token, sent with every Publish; never in repr, logs or errors.
    hub_token: str | None = field(default=None, repr=False)
    host: str = field(init=False)
    port: int = field(init=False)

    def __post_init__(self) -> None:
        host, port = parse_listen(self.listen)
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "port", port)
        _check_path(self.path)
        _check_hubs(self.hubs)
        _check_range(
            "--publish-timeout", self.publish_timeout, MIN_PUBLISH_TIMEOUT, MAX_PUBLISH_TIMEOUT
        )
        _check_range("--max-body-bytes", self.max_body_bytes, 1, MAX_MAX_BODY_BYTES)
        _check_range("--threads", self.threads, 1, 1024)
        _check_range("--connection-limit", self.connection_limit, 1, 100_000)
        _check_range("--channel-timeout", self.channel_timeout, 1, 3600)
        if self.ack_cache_size != 0 and not 2 <= self.ack_cache_size <= MAX_ACK_CACHE_SIZE:
            raise ConfigError(
                f"--ack-cache-size {self.ack_cache_size}: must be 0 (off) or between 2 and "
                f"{MAX_ACK_CACHE_SIZE}"
            )
        _check_range("--ack-cache-ttl", self.ack_cache_ttl, MIN_ACK_CACHE_TTL, MAX_ACK_CACHE_TTL)
        if self.insecure_skip_verification:
            _check_insecure_listen(host)
        else:
            _check_verification(self.public_keys, self.client_ids)
        _check_hub_tls(self)

    @property
    def listens_on_loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def hub_uses_tls(self) -> bool:
        return self.hub_tls or self.hub_tls_ca is not None


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:8080`) -> (host, port); port 0 picks a free port."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"--listen {value!r}: expected HOST:PORT, e.g. 0.0.0.0:8080")
    host = host.removeprefix("[").removesuffix("]") or "0.0.0.0"
    return host, int(port_text)


def parse_hubs(values: Iterable[str]) -> tuple[str, ...]:
    """Flatten repeated and comma-separated `--hub` values, dropping blanks and duplicates."""
    hubs: list[str] = []
    for value in values:
        for part in value.split(","):
            address = part.strip()
            if address and address not in hubs:
                hubs.append(address)
    return tuple(hubs)


def parse_key_source(value: str) -> KeySource:
    """`FILE` or `VERSION=FILE`; VERSION is the Signature's keyVersion (`2=alipay2.pem`)."""
    version, sep, path = value.partition("=")
    if sep and version and "/" not in version and "\\" not in version:
        if not path:
            raise ConfigError(f"--alipay-public-key {value!r}: no file after {version}=")
        return KeySource(Path(path), version.strip())
    return KeySource(Path(value))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_path(path: str) -> None:
    if not path.startswith("/") or "?" in path or "#" in path:
        raise ConfigError(f"--path {path!r}: expected an absolute path such as /alipay/notify")


def _check_hubs(hubs: Sequence[str]) -> None:
    if not hubs:
        raise ConfigError("--hub: at least one hub address is needed, e.g. 127.0.0.1:50051")
    for hub in hubs:
        _, sep, port = hub.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"--hub {hub!r}: expected HOST:PORT")


def _check_range(flag: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{flag} {value}: must be between {low} and {high}")


def _check_hub_tls(config: BridgeConfig) -> None:
    if (config.hub_tls_cert is None) != (config.hub_tls_key is None):
        raise ConfigError("--hub-tls-cert and --hub-tls-key: give both (mutual TLS) or neither")
    if not config.hub_uses_tls and (config.hub_tls_cert or config.hub_tls_server_name):
        raise ConfigError(
            "--hub-tls-cert, --hub-tls-key and --hub-tls-server-name need --hub-tls-ca "
            "(or --hub-tls)"
        )
    if config.hub_token is not None and not config.hub_token:
        raise ConfigError("--hub-token-file: the token is empty")


def _check_insecure_listen(host: str) -> None:
    if not is_loopback(host):
        raise ConfigError(
            f"--insecure-skip-signature-check accepts forged notifications: it is refused while "
            f"listening on {host}; use --listen 127.0.0.1:PORT for local development"
        )


def _check_verification(keys: Sequence[KeySource], client_ids: Sequence[str]) -> None:
    if not keys:
        raise ConfigError(
            "--alipay-public-key: no Alipay public key given; the bridge cannot verify signatures "
            "(use --insecure-skip-signature-check only for local development)"
        )
    if not client_ids:
        raise ConfigError("--client-id: give at least one Client-Id Alipay sends for you")
    versions = [key.version for key in keys]
    if len(set(versions)) != len(versions):
        raise ConfigError("--alipay-public-key: the same key version is given twice")
