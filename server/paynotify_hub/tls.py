"""The hub's TLS: PEM files checked at start (readable, a key matching the certificate, not
expired), turned into gRPC server credentials. Certificates are read once: restart to rotate.

Errors name the file and the problem, never the file's content.
"""

from __future__ import annotations

import logging
import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from paynotify_hub.config import TlsFiles
from paynotify_hub.errors import ConfigError

__all__ = ["EXPIRY_WARNING", "server_credentials"]

logger = logging.getLogger(__name__)

# Warn at start when the hub's certificate expires sooner than this.
EXPIRY_WARNING: Final = timedelta(days=30)


def server_credentials(
    tls: TlsFiles, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> grpc.ServerCredentials:
    """Credentials for `add_secure_port`; with `tls.client_ca`, clients must present a certificate
    signed by it (mutual TLS). Raises ConfigError for a file that cannot serve."""
    chain_pem = _read(tls.cert, "--tls-cert")
    key_pem = _read(tls.key, "--tls-key", secret=True)
    leaf = _leaf_certificate(chain_pem, tls.cert)
    _check_key_matches(key_pem, leaf, tls.key)
    _check_validity(leaf, tls.cert, now())
    client_ca = None
    if tls.client_ca is not None:
        client_ca = _read(tls.client_ca, "--tls-client-ca")
        _leaf_certificate(client_ca, tls.client_ca)
    return grpc.ssl_server_credentials(
        [(key_pem, chain_pem)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def _read(path: Path, flag: str, *, secret: bool = False) -> bytes:
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot read it ({exc.strerror})") from None
    if secret and mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning(
            "%s %s is readable by group or others (mode %o): chmod 600 it",
            flag,
            path,
            stat.S_IMODE(mode),
        )
    return data


def _leaf_certificate(pem: bytes, path: Path) -> x509.Certificate:
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise ConfigError(f"{path}: not a PEM certificate (-----BEGIN CERTIFICATE-----)") from None
    return certificates[0]


def _check_key_matches(key_pem: bytes, leaf: x509.Certificate, path: Path) -> None:
    try:
        key: PrivateKeyTypes = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        # cryptography's message is generic; still, say nothing derived from the key's bytes.
        raise ConfigError(
            f"--tls-key {path}: not an unencrypted PEM private key (-----BEGIN PRIVATE KEY-----)"
        ) from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    ours = key.public_key().public_bytes(serialization.Encoding.DER, public)
    theirs = leaf.public_key().public_bytes(serialization.Encoding.DER, public)
    if ours != theirs:
        raise ConfigError(f"--tls-key {path} does not belong to the certificate in --tls-cert")


def _check_validity(leaf: x509.Certificate, path: Path, now: datetime) -> None:
    subject = leaf.subject.rfc4514_string()
    until = leaf.not_valid_after_utc
    if until <= now:
        raise ConfigError(f"--tls-cert {path} ({subject}) expired on {until:%Y-%m-%d %H:%M} UTC")
    if leaf.not_valid_before_utc > now:
        logger.warning("--tls-cert %s (%s) is not valid yet: check the clock", path, subject)
    if until - now < EXPIRY_WARNING:
        logger.warning(
            "--tls-cert %s (%s) expires on %s UTC: renew it and restart the hub",
            path,
            subject,
            f"{until:%Y-%m-%d %H:%M}",
        )
    else:
        logger.info("TLS certificate %s valid until %s UTC", subject, f"{until:%Y-%m-%d}")
