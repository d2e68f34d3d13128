"""Throwaway test certificates, made with `cryptography` at test time and written as PEM files.

Never committed: every session makes its own CA, server and client certificates in a temporary
folder (EC P-256: quick to generate). A second, unrelated CA plays the attacker's.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Issued", "Pki", "make_pki"]


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as files; `key_pem` to check it never leaks."""

    cert: Path
    key: Path

    @property
    def key_pem(self) -> str:
        return self.key.read_text()

    def key_body_lines(self) -> list[str]:
        """The base64 lines of the key: what a leak would show."""
        return [line for line in self.key_pem.splitlines() if line and "-----" not in line]


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA that signed `server`, `client` and `named_server`
    server: Issued  # SAN localhost, 127.0.0.1, ::1
    named_server: Issued  # SAN hub.internal only
    client: Issued  # clientAuth, signed by `ca`
    expired_server: Issued  # signed by `ca`, expired yesterday
    rogue_ca: Path  # an unrelated CA
    rogue_server: Issued  # SAN 127.0.0.1, signed by `rogue_ca`
    rogue_client: Issued  # clientAuth, signed by `rogue_ca`

    @property
    def ca_pem(self) -> bytes:
        return self.ca.read_bytes()

    @property
    def rogue_ca_pem(self) -> bytes:
        return self.rogue_ca.read_bytes()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.touch(mode=0o600)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


class _Authority:
    def __init__(self, folder: Path, name: str) -> None:
        self.folder = folder
        self.key = _key()
        now = datetime.now(UTC)
        self.name = _name(name)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.path = folder / f"{name}.pem"
        _write_cert(self.cert, self.path)

    def issue(
        self,
        stem: str,
        *,
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
        client: bool = False,
        expired: bool = False,
    ) -> Issued:
        key = _key()
        now = datetime.now(UTC)
        start, end = (
            (now - timedelta(days=3), now - timedelta(days=1))
            if expired
            else (
                now - timedelta(hours=1),
                now + timedelta(days=1),
            )
        )
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(stem))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        issued = Issued(self.folder / f"{stem}.pem", self.folder / f"{stem}.key")
        _write_cert(cert, issued.cert)
        _write_key(key, issued.key)
        return issued


def make_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    ca = _Authority(folder, "test-ca")
    rogue = _Authority(folder, "rogue-ca")
    dns, ips = ("localhost",), ("127.0.0.1", "::1")
    return Pki(
        ca=ca.path,
        server=ca.issue("hub", dns=dns, ips=ips),
        named_server=ca.issue("hub-named", dns=("hub.internal",)),
        client=ca.issue("bridge", client=True),
        expired_server=ca.issue("hub-expired", dns=dns, ips=ips, expired=True),
        rogue_ca=rogue.path,
        rogue_server=rogue.issue("rogue-hub", dns=dns, ips=ips),
        rogue_client=rogue.issue("rogue-client", client=True),
    )
