"""Credentials for talking to a hub: TLS from PEM files, and a bearer token from a file.

::

    credentials = tls_credentials(ca="ca.pem")                          # TLS
    credentials = tls_credentials(ca="ca.pem", cert="me.pem", key="me.key")   # mutual TLS
    token = read_token_file("billing.token")
    Subscriber("hub.internal:50051", "billing", channel_credentials=credentials, token=token)

`tls_credentials` is a thin wrapper of `grpc.ssl_channel_credentials` that reads the files and
names the one that is missing; pass `grpc.ssl_channel_credentials(...)` yourself if you hold the
bytes. The token goes as `authorization: Bearer <token>` call metadata, over TLS or, on loopback,
plaintext (gRPC's call credentials would refuse a plaintext channel). Nothing here logs a token.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import stat
from pathlib import Path

import grpc

__all__ = [
    "CredentialsError",
    "bearer_metadata",
    "is_loopback_target",
    "read_token_file",
    "tls_credentials",
    "warn_plaintext_token",
]

logger = logging.getLogger(__name__)

StrPath = str | os.PathLike[str]


class CredentialsError(ValueError):
    """A TLS or token file cannot be used; the message names the file, never its content."""


def tls_credentials(
    ca: StrPath | None = None, cert: StrPath | None = None, key: StrPath | None = None
) -> grpc.ChannelCredentials:
    """TLS channel credentials: `ca` verifies the hub (None: the system's roots); `cert` and `key`
    (both or neither) are this client's certificate for mutual TLS."""
    if (cert is None) != (key is None):
        raise CredentialsError("a client certificate needs both its cert and its key file")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca, "CA certificate") if ca is not None else None,
        private_key=_read(key, "client key") if key is not None else None,
        certificate_chain=_read(cert, "client certificate") if cert is not None else None,
    )


def read_token_file(path: StrPath) -> str:
    """The token in `path`: trailing whitespace dropped; empty is refused. Warns when group or
    others may read the file."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        token = path.read_text(encoding="utf-8").rstrip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise CredentialsError(f"token file {path}: cannot read it ({reason})") from None
    if not token:
        raise CredentialsError(f"token file {path} is empty")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("token file %s is readable by group or others: chmod 600 it", path)
    return token


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying `token` (empty without one)."""
    return (("authorization", f"Bearer {token}"),) if token else ()


def is_loopback_target(target: str) -> bool:
    """Whether every address in `target` (`host:port[,host:port...]`) is on this machine."""
    hosts = [part.strip().rpartition(":")[0] for part in target.split(",") if part.strip()]
    return bool(hosts) and all(_is_loopback(host) for host in hosts)


def warn_plaintext_token(target: str, tls: bool, token: str | None) -> None:
    """Log a warning when a token would cross the network unencrypted."""
    if token and not tls and not is_loopback_target(target):
        logger.warning(
            "sending a token to %s over plaintext gRPC: anyone on the path can read it; "
            "use TLS (a CA file)",
            target,
        )


def _is_loopback(host: str) -> bool:
    for scheme in ("dns:///", "ipv4:", "ipv6:"):
        host = host.removeprefix(scheme)
    host = host.removeprefix("[").removesuffix("]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read(path: StrPath, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CredentialsError(f"{what} {path}: cannot read it ({exc.strerror})") from None
    if b"-----BEGIN " not in data:
        raise CredentialsError(f"{what} {path}: not a PEM file (-----BEGIN ...-----)")
    return data
