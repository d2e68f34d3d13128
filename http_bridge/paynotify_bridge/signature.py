"""Alipay's RSA256 request signature: parse the header, verify a request, sign one (the simulator).

Alipay signs ``POST <path>\\n<Client-Id>.<Request-Time>.<raw body>`` with RSASSA-PKCS1-v1_5 over
SHA-256 and sends ``Signature: algorithm=RSA256,keyVersion=1,signature=<url-encoded base64>``.

There is deliberately no freshness check on Request-Time: whether Alipay's retries reuse it is not
documented, and a replayed genuine notification is harmless because the hub deduplicates on the
body's identity.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.exceptions import UnsupportedAlgorithm as _CryptoUnsupported
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificatePublicKeyTypes,
    PublicKeyTypes,
)

from paynotify_bridge.errors import (
    BadSignature,
    KeyLoadError,
    MalformedSignatureHeader,
    MissingHeader,
    UnknownClientId,
    UnknownKeyVersion,
    UnsupportedAlgorithm,
)

__all__ = [
    "ALGORITHM",
    "MIN_KEY_BITS",
    "KeyLoadError",
    "SignatureHeader",
    "VerifiedRequest",
    "Verifier",
    "generate_key_pair",
    "load_private_key",
    "load_public_key",
    "parse_signature_header",
    "public_key_base64",
    "sign",
    "signed_content",
    "verify_rsa256",
]

ALGORITHM = "RSA256"
MIN_KEY_BITS = 2048
CLIENT_ID_HEADER = "Client-Id"
REQUEST_TIME_HEADER = "Request-Time"
SIGNATURE_HEADER = "Signature"

_PADDING = padding.PKCS1v15()
_HASH = hashes.SHA256()
_FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_WANTED_HEADERS = {
    name.lower(): name for name in (CLIENT_ID_HEADER, REQUEST_TIME_HEADER, SIGNATURE_HEADER)
}


def signed_content(method: str, path: str, client_id: str, request_time: str, body: bytes) -> bytes:
    """The bytes Alipay signs: the path as it arrived, header values verbatim, the raw body.

    Text is UTF-8; surrogate escapes (undecodable bytes kept by ``surrogateescape``) go back to the
    bytes they stand for, so a path taken from the raw request target is signed byte for byte.
    """
    head = f"{method} {path}\n{client_id}.{request_time}."
    return head.encode("utf-8", "surrogateescape") + body


@dataclass(frozen=True)
class SignatureHeader:
    algorithm: str
    key_version: str | None
    signature: bytes


def parse_signature_header(value: str) -> SignatureHeader:
    """Parse ``algorithm=RSA256,keyVersion=1,signature=<sig>``.

    Field names are matched as Alipay spells them; whitespace around fields is ignored; other
    fields before ``signature=`` are ignored. Everything after ``signature=`` is the signature: it
    is URL-decoded (``%2B``/``%2b`` alike; a literal ``+`` stays ``+``), then decoded as strict,
    canonical base64.
    """
    fields, encoded = _split_fields(value)
    algorithm = fields.get("algorithm")
    if algorithm is None:
        raise MalformedSignatureHeader("the Signature header has no algorithm= field")
    if algorithm != ALGORITHM:
        raise UnsupportedAlgorithm(
            f"the Signature header names algorithm {_preview(algorithm)}: only RSA256 is accepted"
        )
    key_version = fields.get("keyVersion")
    if key_version == "":
        raise MalformedSignatureHeader("the Signature header has an empty keyVersion= field")
    return SignatureHeader(algorithm, key_version, _decode_signature(encoded))


def _split_fields(value: str) -> tuple[dict[str, str], str]:
    """The ``name=value`` fields before ``signature=``, and the raw text after it."""
    fields: dict[str, str] = {}
    text = value.strip()
    start = 0  # an index into `text`, never a copy of its rest: linear in the header's length
    while True:
        eq = text.find("=", start)
        name = text[start:eq].strip() if eq >= 0 else ""
        if not _FIELD_NAME.fullmatch(name):
            raise MalformedSignatureHeader()
        if name == "signature":
            return fields, text[eq + 1 :].strip()
        comma = text.find(",", eq + 1)
        if comma < 0:
            raise MalformedSignatureHeader("the Signature header has no signature= field")
        if name in fields:
            raise MalformedSignatureHeader(f"the Signature header repeats the {name}= field")
        fields[name] = text[eq + 1 : comma].strip()
        start = comma + 1


def _decode_signature(encoded: str) -> bytes:
    text = _url_decode(encoded)
    if not text:
        raise MalformedSignatureHeader("the Signature header's signature= field is empty")
    try:
        raw = binascii.a2b_base64(text, strict_mode=True)
    except ValueError:  # binascii.Error, or text that is not ASCII
        raise MalformedSignatureHeader(
            "the Signature header's signature is not standard base64 (after URL-decoding)"
        ) from None
    # Canonical base64 only, so that one signature has exactly one spelling.
    if base64.b64encode(raw).decode("ascii") != text:
        raise MalformedSignatureHeader(
            "the Signature header's signature is not canonical base64 (stray trailing bits)"
        )
    return raw


def _url_decode(text: str) -> str:
    """`urllib.parse.unquote`, with a fast path for the three escapes base64 needs."""
    if "%" not in text:
        return text
    decoded = text.replace("%2B", "+").replace("%2F", "/").replace("%3D", "=")
    # Any '%' left (lowercase hex, other escapes): the general decoder. Never unquote_plus: a
    # literal '+' is base64, not a space.
    return unquote(text) if "%" in decoded else decoded


@dataclass(frozen=True)
class VerifiedRequest:
    client_id: str
    request_time: str
    key_version: str | None


class Verifier:
    """Verifies Alipay's signature on a request, with keys selected by keyVersion.

    ``keys`` maps a keyVersion to Alipay's public key; a key under ``None`` serves any keyVersion
    not registered explicitly, and a header without keyVersion. ``client_ids`` is the allowlist of
    Client-Id values.
    """

    def __init__(
        self, keys: Mapping[str | None, rsa.RSAPublicKey], client_ids: Collection[str]
    ) -> None:
        if not keys:
            raise ValueError("Verifier needs at least one Alipay public key")
        if not client_ids:
            raise ValueError("Verifier needs a non-empty Client-Id allowlist")
        for version, key in keys.items():
            if not isinstance(key, rsa.RSAPublicKey):
                raise TypeError(f"key for keyVersion {version!r} is not an RSA public key")
        self._keys: dict[str | None, rsa.RSAPublicKey] = dict(keys)
        self._default = self._keys.get(None)
        self._client_ids = frozenset(client_ids)

    @property
    def key_versions(self) -> list[str | None]:
        return list(self._keys)

    def verify(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> VerifiedRequest:
        """Return who signed, or raise a `SignatureRejected` subclass saying why not."""
        client_id, request_time, header_value = _required_headers(headers)
        header = parse_signature_header(header_value)
        if client_id not in self._client_ids:
            raise UnknownClientId(
                f"Client-Id {_preview(client_id)} is not in the allowlist (--client-id)"
            )
        key = self._key_for(header.key_version)
        try:
            content = signed_content(method, path, client_id, request_time, body)
        except UnicodeEncodeError:
            raise BadSignature("the request line or headers cannot be encoded as UTF-8") from None
        verify_rsa256(key, header.signature, content)
        return VerifiedRequest(client_id, request_time, header.key_version)

    def _key_for(self, key_version: str | None) -> rsa.RSAPublicKey:
        key = self._keys.get(key_version)
        if key is None:
            key = self._default
        if key is None:
            configured = ", ".join(sorted(str(v) for v in self._keys))
            asked = (
                "no keyVersion" if key_version is None else f"keyVersion {_preview(key_version)}"
            )
            raise UnknownKeyVersion(
                f"the Signature header has {asked} and no Alipay public key is configured for "
                f"it (configured keyVersions: {configured}; add one with "
                "--alipay-public-key VERSION=FILE)"
            )
        return key


def verify_rsa256(key: rsa.RSAPublicKey, signature: bytes, content: bytes) -> None:
    """RSASSA-PKCS1-v1_5 with SHA-256 over `content`, or BadSignature: the same acceptance as
    ``key.verify(signature, content, PKCS1v15(), SHA256())``, in a way that keeps the GIL.

    cryptography's ``verify`` lets other threads run during the RSA operation (~20 µs). In the
    bridge, 32 threads want the GIL, so the verifying thread then has to win it back: a hand-off
    per signed request (docs/benchmark.md has the A/B runs; `python -m bench.gilprobe` shows
    which calls give the GIL up). ``recover_data_from_signature`` with a hash holds the GIL:
    OpenSSL's PKCS#1 v1.5 verification (the same function as ``verify``) checks the padding and
    that the encoded DigestInfo is exactly SHA-256's, and returns the digest in it; it must then
    equal SHA-256 of `content` (compared in constant time, though nothing here is secret).
    """
    try:
        signed_digest = key.recover_data_from_signature(signature, _PADDING, _HASH)
    except InvalidSignature:
        raise BadSignature() from None
    if not hmac.compare_digest(signed_digest, hashlib.sha256(content).digest()):
        raise BadSignature()


def _required_headers(headers: Mapping[str, str]) -> tuple[str, str, str]:
    """Client-Id, Request-Time and Signature, looked up case-insensitively."""
    found: dict[str, str] = {}
    for name, value in headers.items():
        canonical = _WANTED_HEADERS.get(name.lower())
        if canonical is None:
            continue
        if canonical in found:
            raise MalformedSignatureHeader(f"the {canonical} header is given more than once")
        found[canonical] = value
    for name in (CLIENT_ID_HEADER, REQUEST_TIME_HEADER, SIGNATURE_HEADER):
        if not found.get(name, "").strip():
            raise MissingHeader(name)
    return found[CLIENT_ID_HEADER], found[REQUEST_TIME_HEADER], found[SIGNATURE_HEADER]


def sign(
    private_key: rsa.RSAPrivateKey,
    method: str,
    path: str,
    client_id: str,
    request_time: str,
    body: bytes,
    key_version: str | None = "1",
) -> str:
    """The full Signature header value Alipay would send for this request (URL-encoded base64)."""
    raw = private_key.sign(
        signed_content(method, path, client_id, request_time, body), _PADDING, _HASH
    )
    encoded = quote(base64.b64encode(raw).decode("ascii"), safe="")
    version = "" if key_version is None else f"keyVersion={key_version},"
    return f"algorithm={ALGORITHM},{version}signature={encoded}"


def load_public_key(data: bytes) -> rsa.RSAPublicKey:
    """Alipay's public key: PEM, base64 of DER SubjectPublicKeyInfo (``MIIBIj...``), or DER.

    A PEM X.509 certificate is accepted too (its public key is used; the chain is not checked).
    """
    text = data.strip()
    if not text:
        raise KeyLoadError("the public key is empty")
    if b"PRIVATE KEY-----" in text:
        raise KeyLoadError("this is a private key: the bridge needs Alipay's public key")
    key: PublicKeyTypes | CertificatePublicKeyTypes
    try:
        if text.startswith(b"-----BEGIN CERTIFICATE"):
            key = x509.load_pem_x509_certificate(text).public_key()
        elif text.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(text)
        else:
            key = serialization.load_der_public_key(_der(data))
    except (ValueError, TypeError, _CryptoUnsupported):
        raise KeyLoadError(
            "not a public key: expected PEM ('-----BEGIN PUBLIC KEY-----') or Alipay's base64 "
            "of a DER SubjectPublicKeyInfo ('MIIBIj...')"
        ) from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyLoadError(f"the public key is {type(key).__name__}, not RSA")
    _check_size(key.key_size)
    return key


def load_private_key(data: bytes) -> rsa.RSAPrivateKey:
    """An RSA private key: PEM (PKCS#8 or PKCS#1), base64 of DER PKCS#8, or DER (unencrypted)."""
    text = data.strip()
    if not text:
        raise KeyLoadError("the private key is empty")
    try:
        if text.startswith(b"-----BEGIN"):
            key = serialization.load_pem_private_key(text, password=None)
        else:
            key = serialization.load_der_private_key(_der(data), password=None)
    except (ValueError, TypeError, _CryptoUnsupported):
        raise KeyLoadError(
            "not an unencrypted private key: expected PEM ('-----BEGIN PRIVATE KEY-----' or "
            "'-----BEGIN RSA PRIVATE KEY-----') or base64 of a DER PKCS#8 key ('MIIEv...')"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyLoadError(f"the private key is {type(key).__name__}, not RSA")
    _check_size(key.key_size)
    return key


def _der(data: bytes) -> bytes:
    """Raw DER as given, or the DER inside base64 text (whitespace and newlines tolerated)."""
    if data[:1] == b"\x30":
        return data
    compact = b"".join(data.split())
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None


def _check_size(bits: int) -> None:
    if bits < MIN_KEY_BITS:
        raise KeyLoadError(f"the RSA key has {bits} bits; at least {MIN_KEY_BITS} are required")


def public_key_base64(key: rsa.RSAPublicKey) -> str:
    """The key as Alipay hands it out: base64 of DER SubjectPublicKeyInfo, one line."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode("ascii")


def generate_key_pair() -> tuple[bytes, bytes]:
    """A fresh 2048-bit pair for development and tests: (private PKCS#8 PEM, public PEM)."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=MIN_KEY_BITS)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def _preview(value: str, limit: int = 16) -> str:
    """A short, quoted prefix of an untrusted value for a reason text."""
    return repr(value[:limit] + ("…" if len(value) > limit else ""))
