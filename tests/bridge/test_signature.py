"""Alipay's RSA256 signature: golden vectors, tampering, header parsing, keys, rotation."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paynotify_bridge.errors import (
    BadSignature,
    KeyLoadError,
    MalformedSignatureHeader,
    MissingHeader,
    SignatureRejected,
    UnknownClientId,
    UnknownKeyVersion,
    UnsupportedAlgorithm,
)
from paynotify_bridge.signature import (
    SignatureHeader,
    VerifiedRequest,
    Verifier,
    generate_key_pair,
    load_private_key,
    load_public_key,
    parse_signature_header,
    public_key_base64,
    sign,
    signed_content,
    verify_rsa256,
)
from tests.bridge import GOLDEN_DIR, spec_samples

CLIENT_ID = "SANDBOX_5Y3A2N2YEB3002022"
REQUEST_TIME = "2019-07-12T12:08:56.253+05:30"
PATH = "/alipay/notify"
VECTORS: list[dict[str, Any]] = json.loads((GOLDEN_DIR / "signature_vectors.json").read_text())[
    "vectors"
]
SAMPLES = spec_samples()  # at collection: missing samples fail the run, never skip


@cache
def private_key(name: str = "test_private.pem") -> rsa.RSAPrivateKey:
    return load_private_key((GOLDEN_DIR / name).read_bytes())


@cache
def public_key(name: str = "test_public.pem") -> rsa.RSAPublicKey:
    return load_public_key((GOLDEN_DIR / name).read_bytes())


@cache
def stranger_key() -> rsa.RSAPrivateKey:
    return load_private_key(generate_key_pair()[0])


def headers(
    signature: str, client_id: str = CLIENT_ID, request_time: str = REQUEST_TIME
) -> dict[str, str]:
    return {"Client-Id": client_id, "Request-Time": request_time, "Signature": signature}


def signed(
    body: bytes, *, key_version: str | None = "1", key: rsa.RSAPrivateKey | None = None
) -> str:
    return sign(key or private_key(), "POST", PATH, CLIENT_ID, REQUEST_TIME, body, key_version)


def verifier(*client_ids: str, keys: dict[str | None, rsa.RSAPublicKey] | None = None) -> Verifier:
    return Verifier(keys or {"1": public_key()}, client_ids or (CLIENT_ID,))


def sig_b64(header: str) -> str:
    from urllib.parse import unquote

    return unquote(header.split("signature=", 1)[1])


def with_sig_bytes(header: str, raw: bytes) -> str:
    prefix = header.split("signature=", 1)[0]
    return prefix + "signature=" + quote(base64.b64encode(raw).decode(), safe="")


# -- golden vectors --------------------------------------------------------------------------


def vector_body(vector: dict[str, Any]) -> bytes:
    return base64.b64decode(vector["body_b64"])


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_golden_vector_resigns_byte_for_byte(vector: dict[str, Any]) -> None:
    body = vector_body(vector)
    args = (vector["method"], vector["path"], vector["client_id"], vector["request_time"], body)
    content = signed_content(*args)
    assert hashlib.sha256(content).hexdigest() == vector["signed_content_sha256"]
    header = sign(private_key(), *args, key_version=vector["key_version"])
    assert header == vector["signature_header"]
    assert sig_b64(header) == vector["signature_b64"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_golden_vector_verifies(vector: dict[str, Any]) -> None:
    v = Verifier({None: public_key()}, [vector["client_id"]])
    hdrs = headers(vector["signature_header"], vector["client_id"], vector["request_time"])
    result = v.verify(vector["method"], vector["path"], hdrs, vector_body(vector))
    assert result == VerifiedRequest(
        vector["client_id"], vector["request_time"], vector["key_version"]
    )


def test_golden_bodies_are_the_spec_samples_byte_for_byte() -> None:
    golden = {v["sample"].removesuffix(".json"): vector_body(v) for v in VECTORS if "sample" in v}
    assert golden == SAMPLES


def test_signed_content_is_the_documented_layout() -> None:
    content = signed_content("POST", "/a%2Fb", "cid", "2020-01-01T00:00:00Z", b'{"x":1}\n')
    assert content == b'POST /a%2Fb\ncid.2020-01-01T00:00:00Z.{"x":1}\n'


def test_golden_public_key_files_hold_the_same_key() -> None:
    from_b64 = load_public_key((GOLDEN_DIR / "test_public.b64").read_bytes())
    assert from_b64.public_numbers() == public_key().public_numbers()
    assert private_key().public_key().public_numbers() == public_key().public_numbers()


# -- every sample round-trips, every single-byte change is rejected --------------------------


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sample_round_trips(name: str) -> None:
    body = SAMPLES[name]
    result = verifier().verify("POST", PATH, headers(signed(body)), body)
    assert result == VerifiedRequest(CLIENT_ID, REQUEST_TIME, "1")


def byte_changes(data: bytes) -> Iterator[bytes]:
    """Every position flipped (two ways), deleted, and a byte inserted before it and at the end."""
    for i in range(len(data)):
        for mask in (0x01, 0x80):
            yield data[:i] + bytes([data[i] ^ mask]) + data[i + 1 :]
        yield data[:i] + data[i + 1 :]
        yield data[:i] + b" " + data[i:]
    yield data + b" "


def text_changes(text: str) -> Iterator[str]:
    for i in range(len(text)):
        yield text[:i] + chr(ord(text[i]) ^ 0x01) + text[i + 1 :]
        yield text[:i] + text[i + 1 :]
        yield text[:i] + "x" + text[i:]
    yield text + "x"


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_single_byte_change_of_the_body_is_rejected(name: str) -> None:
    body = SAMPLES[name]
    header, v = signed(body), verifier()
    for changed in byte_changes(body):
        with pytest.raises(BadSignature):
            v.verify("POST", PATH, headers(header), changed)


def test_every_single_character_change_of_the_path_is_rejected() -> None:
    body = SAMPLES["payment_result_success"]
    header, v = signed(body), verifier()
    for changed in [*text_changes(PATH), PATH + "?a=1", PATH + "/", "/alipay%2Fnotify"]:
        with pytest.raises(BadSignature):
            v.verify("POST", changed, headers(header), body)


def test_the_method_is_signed() -> None:
    body = SAMPLES["payment_result_success"]
    for method in ("PUT", "post", "GET", "POST "):
        with pytest.raises(BadSignature):
            verifier().verify(method, PATH, headers(signed(body)), body)


def test_every_single_character_change_of_client_id_is_rejected() -> None:
    body = SAMPLES["payment_result_success"]
    header = signed(body)
    changes = list(text_changes(CLIENT_ID))
    v = verifier(CLIENT_ID, *changes)  # allowlisted, so it is the signature that refuses them
    for changed in changes:
        with pytest.raises(BadSignature):
            v.verify("POST", PATH, headers(header, client_id=changed), body)


def test_every_single_character_change_of_request_time_is_rejected() -> None:
    body = SAMPLES["payment_result_success"]
    header, v = signed(body), verifier()
    for changed in text_changes(REQUEST_TIME):
        with pytest.raises(BadSignature):
            v.verify("POST", PATH, headers(header, request_time=changed), body)


def test_every_bit_of_the_decoded_signature_is_checked() -> None:
    body = SAMPLES["payment_result_instore_fx"]
    header, v = signed(body), verifier()
    raw = base64.b64decode(sig_b64(header))
    assert len(raw) == 256
    for i in range(len(raw)):
        for bit in range(8):
            changed = raw[:i] + bytes([raw[i] ^ (1 << bit)]) + raw[i + 1 :]
            with pytest.raises(BadSignature):
                v.verify("POST", PATH, headers(with_sig_bytes(header, changed)), body)
    for changed in (raw[:-1], raw + b"\x00", b"\x00" + raw, b"\x00" * 256):
        with pytest.raises(BadSignature):
            v.verify("POST", PATH, headers(with_sig_bytes(header, changed)), body)


def test_every_single_character_change_of_the_signature_header_is_rejected() -> None:
    body = SAMPLES["payment_result_success"]
    header, v = signed(body), verifier()
    for i in range(len(header)):
        for replacement in {"A", "a", "/", "+", "=", "%", ",", " ", chr(ord(header[i]) ^ 1)}:
            if replacement == header[i]:
                continue
            changed = header[:i] + replacement + header[i + 1 :]
            with pytest.raises(SignatureRejected):
                v.verify("POST", PATH, headers(changed), body)


# -- URL encoding of the signature -----------------------------------------------------------


def find_body_with_plus_and_slash() -> tuple[bytes, str]:
    """A body whose base64 signature holds '+', '/' and '=', so the encodings all matter."""
    for n in range(1000):
        body = b'{"n":%d}' % n
        b64 = sig_b64(signed(body))
        if "+" in b64 and "/" in b64 and b64.endswith("="):
            return body, b64
    raise AssertionError("no such body in 1000 tries")


def test_lowercase_and_uppercase_percent_encoding_both_verify() -> None:
    body, b64 = find_body_with_plus_and_slash()
    upper = quote(b64, safe="")
    lower = upper.replace("%2B", "%2b").replace("%2F", "%2f").replace("%3D", "%3d")
    assert upper != lower
    for encoded in (upper, lower):
        header = f"algorithm=RSA256,keyVersion=1,signature={encoded}"
        verifier().verify("POST", PATH, headers(header), body)


def test_unencoded_and_partly_encoded_base64_verify_and_plus_stays_plus() -> None:
    body, b64 = find_body_with_plus_and_slash()
    partly = b64.replace("/", "%2F", 1).replace("=", "%3d")
    for encoded in (b64, partly):
        header = f"algorithm=RSA256,keyVersion=1,signature={encoded}"
        verifier().verify("POST", PATH, headers(header), body)
    assert parse_signature_header(f"algorithm=RSA256,signature={b64}").signature == (
        base64.b64decode(b64)
    )


def test_double_encoded_signature_is_malformed() -> None:
    body, b64 = find_body_with_plus_and_slash()
    header = f"algorithm=RSA256,keyVersion=1,signature={quote(quote(b64, safe=''), safe='')}"
    with pytest.raises(MalformedSignatureHeader):
        verifier().verify("POST", PATH, headers(header), body)


# -- the Signature header --------------------------------------------------------------------


def test_parse_signature_header_fields() -> None:
    raw = bytes(range(256))
    b64 = quote(base64.b64encode(raw).decode(), safe="")
    assert parse_signature_header(f"algorithm=RSA256,keyVersion=7,signature={b64}") == (
        SignatureHeader("RSA256", "7", raw)
    )
    assert parse_signature_header(f"algorithm=RSA256,signature={b64}") == (
        SignatureHeader("RSA256", None, raw)
    )


def test_whitespace_around_fields_and_unknown_fields_are_tolerated() -> None:
    body = SAMPLES["payment_result_success"]
    encoded = signed(body).split("signature=", 1)[1]
    for header in (
        f"  algorithm=RSA256, keyVersion=1 ,signature={encoded}  ",
        f"algorithm = RSA256 , keyVersion = 1 , signature = {encoded}",
        f"algorithm=RSA256,keyVersion=1,charset=UTF-8,signature={encoded}",
        f"keyVersion=1,algorithm=RSA256,signature={encoded}",
    ):
        verifier().verify("POST", PATH, headers(header), body)


GOOD_B64 = base64.b64encode(b"\x01" * 256).decode()

MALFORMED_HEADERS = {
    "empty": "",
    "only spaces": "   ",
    "no signature field": "algorithm=RSA256,keyVersion=1",
    "no equals at all": "RSA256",
    "empty signature": "algorithm=RSA256,keyVersion=1,signature=",
    "blank signature": "algorithm=RSA256,keyVersion=1,signature=   ",
    "no algorithm": f"keyVersion=1,signature={GOOD_B64}",
    "empty keyVersion": f"algorithm=RSA256,keyVersion=,signature={GOOD_B64}",
    "repeated keyVersion": f"algorithm=RSA256,keyVersion=1,keyVersion=2,signature={GOOD_B64}",
    "repeated algorithm": f"algorithm=RSA256,algorithm=RSA256,signature={GOOD_B64}",
    "capitalised field name": f"algorithm=RSA256,keyVersion=1,Signature={GOOD_B64}",
    "signature not last": f"algorithm=RSA256,signature={GOOD_B64},keyVersion=1",
    "bad base64 character": "algorithm=RSA256,signature=" + GOOD_B64[:10] + "*" + GOOD_B64[11:],
    "url-safe base64": "algorithm=RSA256,signature="
    + base64.urlsafe_b64encode(b"\xfb\xff" * 3).decode(),
    "missing padding": "algorithm=RSA256,signature=" + GOOD_B64.rstrip("="),
    "too much padding": "algorithm=RSA256,signature=" + GOOD_B64 + "=",
    "inner whitespace": "algorithm=RSA256,signature=" + GOOD_B64[:8] + " " + GOOD_B64[8:],
    "non-canonical trailing bits": "algorithm=RSA256,signature=AQF=",
    "bad percent escape": "algorithm=RSA256,signature=%ZZ" + GOOD_B64,
    "non-ascii": "algorithm=RSA256,signature=" + GOOD_B64[:-4] + "ä===",
    "field name with space": f"algo rithm=RSA256,signature={GOOD_B64}",
}


@pytest.mark.parametrize("value", MALFORMED_HEADERS.values(), ids=MALFORMED_HEADERS.keys())
def test_malformed_signature_header(value: str) -> None:
    with pytest.raises(MalformedSignatureHeader) as caught:
        parse_signature_header(value)
    assert caught.value.status == 401
    assert GOOD_B64 not in caught.value.reason


@pytest.mark.parametrize("algorithm", ["RSA", "rsa256", "RSA2", "SHA256withRSA", "ES256", ""])
def test_unsupported_algorithm(algorithm: str) -> None:
    with pytest.raises(UnsupportedAlgorithm) as caught:
        parse_signature_header(f"algorithm={algorithm},keyVersion=1,signature={GOOD_B64}")
    assert "RSA256" in caught.value.reason


def test_unsupported_algorithm_rejected_by_verify() -> None:
    body = SAMPLES["payment_result_success"]
    header = signed(body).replace("algorithm=RSA256", "algorithm=RSA")
    with pytest.raises(UnsupportedAlgorithm):
        verifier().verify("POST", PATH, headers(header), body)


# -- headers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rename",
    [str.lower, str.upper, str.swapcase, str],
    ids=["lower", "upper (falcon)", "swapcase", "as sent"],
)
def test_header_names_are_case_insensitive(rename: Callable[[str], str]) -> None:
    body = SAMPLES["payment_result_success"]
    hdrs = {rename(k): v for k, v in headers(signed(body)).items()}
    hdrs["Content-Type"] = "application/json"
    assert verifier().verify("POST", PATH, hdrs, body).client_id == CLIENT_ID


@pytest.mark.parametrize("missing", ["Client-Id", "Request-Time", "Signature"])
def test_each_missing_header_is_named(missing: str) -> None:
    body = SAMPLES["payment_result_success"]
    hdrs = headers(signed(body))
    del hdrs[missing]
    with pytest.raises(MissingHeader) as caught:
        verifier().verify("POST", PATH, hdrs, body)
    assert caught.value.header == missing
    assert missing in caught.value.reason
    assert caught.value.status == 401
    hdrs[missing] = "  "
    with pytest.raises(MissingHeader) as caught:
        verifier().verify("POST", PATH, hdrs, body)
    assert caught.value.header == missing


def test_no_headers_at_all_names_client_id_first() -> None:
    with pytest.raises(MissingHeader) as caught:
        verifier().verify("POST", PATH, {}, b"{}")
    assert caught.value.header == "Client-Id"


def test_a_header_given_twice_in_different_case_is_refused() -> None:
    body = SAMPLES["payment_result_success"]
    hdrs = headers(signed(body))
    hdrs["client-id"] = "someone-else"
    with pytest.raises(MalformedSignatureHeader):
        verifier("someone-else", CLIENT_ID).verify("POST", PATH, hdrs, body)


# -- client ids and keys ---------------------------------------------------------------------


def test_unknown_client_id() -> None:
    body = SAMPLES["payment_result_success"]
    header = sign(private_key(), "POST", PATH, "OTHER_CLIENT", REQUEST_TIME, body)
    with pytest.raises(UnknownClientId) as caught:
        verifier().verify("POST", PATH, headers(header, client_id="OTHER_CLIENT"), body)
    assert caught.value.status == 401
    assert sig_b64(header) not in caught.value.reason


def test_allowlist_with_several_client_ids() -> None:
    body = SAMPLES["payment_result_success"]
    v = verifier("A", CLIENT_ID, "B")
    for cid in ("A", CLIENT_ID, "B"):
        header = sign(private_key(), "POST", PATH, cid, REQUEST_TIME, body)
        assert v.verify("POST", PATH, headers(header, client_id=cid), body).client_id == cid


def test_empty_allowlist_or_no_keys_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="allowlist"):
        Verifier({"1": public_key()}, [])
    with pytest.raises(ValueError, match="public key"):
        Verifier({}, [CLIENT_ID])


def test_wrong_key_version() -> None:
    body = SAMPLES["payment_result_success"]
    with pytest.raises(UnknownKeyVersion) as caught:
        verifier().verify("POST", PATH, headers(signed(body, key_version="2")), body)
    assert "2" in caught.value.reason
    assert caught.value.status == 401


def test_no_key_version_and_no_default_key() -> None:
    body = SAMPLES["payment_result_success"]
    with pytest.raises(UnknownKeyVersion):
        verifier().verify("POST", PATH, headers(signed(body, key_version=None)), body)


def test_unregistered_key_with_a_registered_version_is_rejected() -> None:
    body = SAMPLES["payment_result_success"]
    header = signed(body, key=stranger_key())
    with pytest.raises(BadSignature):
        verifier().verify("POST", PATH, headers(header), body)
    with pytest.raises(BadSignature):
        Verifier({None: public_key()}, [CLIENT_ID]).verify("POST", PATH, headers(header), body)


def test_key_rotation_two_versions_valid_at_once() -> None:
    body = SAMPLES["payment_result_instore_fx"]
    old, new = private_key(), private_key("test_private_v2.pem")
    v = verifier(keys={"1": public_key(), "2": public_key("test_public_v2.pem")})
    assert (
        v.verify("POST", PATH, headers(signed(body, key=old, key_version="1")), body).key_version
        == "1"
    )
    assert (
        v.verify("POST", PATH, headers(signed(body, key=new, key_version="2")), body).key_version
        == "2"
    )
    for key, version in ((old, "2"), (new, "1")):
        with pytest.raises(BadSignature):
            v.verify("POST", PATH, headers(signed(body, key=key, key_version=version)), body)


def test_default_key_serves_unregistered_versions_and_no_version() -> None:
    body = SAMPLES["payment_result_success"]
    v = verifier(keys={None: public_key(), "2": public_key("test_public_v2.pem")})
    for version in ("1", "99", None):
        assert v.verify("POST", PATH, headers(signed(body, key_version=version)), body)
    # An explicitly registered version is never served by the default key.
    with pytest.raises(BadSignature):
        v.verify("POST", PATH, headers(signed(body, key_version="2")), body)


def test_sign_without_key_version_omits_the_field() -> None:
    header = signed(b"{}", key_version=None)
    assert header.startswith("algorithm=RSA256,signature=")
    assert "keyVersion" not in header
    assert parse_signature_header(header).key_version is None


def test_reasons_never_hold_the_signature() -> None:
    body = SAMPLES["payment_result_success"]
    header = signed(body)
    b64 = sig_b64(header)
    cases: list[tuple[Verifier, dict[str, str], bytes]] = [
        (verifier(), headers(header), body + b" "),
        (verifier(), headers(signed(body, key_version="9")), body),
        (verifier("x"), headers(header), body),
    ]
    for v, hdrs, data in cases:
        with pytest.raises(SignatureRejected) as caught:
            v.verify("POST", PATH, hdrs, data)
        assert b64 not in str(caught.value)
        assert quote(b64, safe="") not in str(caught.value)
        assert str(caught.value) == caught.value.reason


# -- loading keys ----------------------------------------------------------------------------


def test_base64_der_and_pem_public_keys_load_identically() -> None:
    pem = (GOLDEN_DIR / "test_public.pem").read_bytes()
    b64 = (GOLDEN_DIR / "test_public.b64").read_bytes()
    der = base64.b64decode(b64)
    wrapped = b"\n".join(b64.strip()[i : i + 64] for i in range(0, len(b64.strip()), 64))
    variants = [pem, b"\n  " + pem + b"\n\n", b64, b64.strip(), b"  " + wrapped + b"\r\n", der]
    expected = public_key().public_numbers()
    for data in variants:
        assert load_public_key(data).public_numbers() == expected
    assert public_key_base64(public_key()) == b64.decode().strip()
    assert b64.startswith(b"MIIBIjAN")


def test_public_key_from_a_certificate() -> None:
    key = private_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alipay test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    loaded = load_public_key(cert.public_bytes(serialization.Encoding.PEM))
    assert loaded.public_numbers() == public_key().public_numbers()


def test_bad_public_keys() -> None:
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    small = (
        rsa.generate_private_key(65537, 1024)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    cases = {
        b"": "empty",
        b"   \n": "empty",
        b"not a key": "not a public key",
        b"MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA": "not a public key",
        b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n": "not a public key",
        (GOLDEN_DIR / "test_private.pem").read_bytes(): "private key",
        ec_pem: "not RSA",
        small: "1024 bits",
    }
    for data, message in cases.items():
        with pytest.raises(KeyLoadError, match=message) as caught:
            load_public_key(data)
        assert isinstance(caught.value, ValueError)
        if len(data) > 60:  # the key material itself never appears in the reason
            assert data[30:60].decode("latin-1") not in str(caught.value)


def test_private_key_formats_load_identically() -> None:
    key = private_key()
    pkcs8_der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pkcs1_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    b64 = base64.b64encode(pkcs8_der)
    wrapped = b"\n".join(b64[i : i + 76] for i in range(0, len(b64), 76))
    expected = key.private_numbers()
    for data in (pkcs1_pem, b64, wrapped + b"\n", pkcs8_der):
        assert load_private_key(data).private_numbers() == expected


def test_bad_private_keys() -> None:
    encrypted = private_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    for data in (b"", b"garbage", encrypted, (GOLDEN_DIR / "test_public.pem").read_bytes()):
        with pytest.raises(KeyLoadError):
            load_private_key(data)


def test_generate_key_pair() -> None:
    private_pem, public_pem = generate_key_pair()
    assert private_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public_pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    priv, pub = load_private_key(private_pem), load_public_key(public_pem)
    assert priv.key_size == 2048
    body = b'{"notifyType":"PAYMENT_RESULT"}'
    header = sign(priv, "POST", PATH, CLIENT_ID, REQUEST_TIME, body)
    Verifier({"1": pub}, [CLIENT_ID]).verify("POST", PATH, headers(header), body)


# -- verify_rsa256 accepts exactly what cryptography's verify accepts --------------------------
# Encoded messages (EM, RFC 8017 9.2) built by hand and turned into signatures with the raw private
# operation, so that malformed encodings (which no signer makes) are tried as well.

_SHA256_PREFIX = bytes.fromhex("3031300d060960864801650304020105000420")
_SHA256_PREFIX_NO_NULL = bytes.fromhex("302f300b0609608648016503040201" + "0420")
_SHA1_PREFIX = bytes.fromhex("3021300906052b0e03021a05000414")
_SHA512_PREFIX = bytes.fromhex("3051300d060960864801650304020305000440")
CONTENT = b"POST /alipay/notify\nclient.time.{}"


def _em(t: bytes, size: int = 256, block: bytes = b"\x00\x01", fill: int = 0xFF) -> bytes:
    return block + bytes([fill]) * (size - len(t) - len(block) - 1) + b"\x00" + t


def _raw_signature(em: bytes, key: rsa.RSAPrivateKey | None = None) -> bytes:
    numbers = (key or private_key()).private_numbers()
    n = numbers.public_numbers.n
    return pow(int.from_bytes(em, "big"), numbers.d, n).to_bytes(len(em), "big")


def _cryptography_accepts(
    signature: bytes, content: bytes, key: rsa.RSAPublicKey | None = None
) -> bool:
    try:
        (key or public_key()).verify(signature, content, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def _verify_rsa256_accepts(
    signature: bytes, content: bytes, key: rsa.RSAPublicKey | None = None
) -> bool:
    try:
        verify_rsa256(key or public_key(), signature, content)
    except BadSignature:
        return False
    return True


_DIGEST = hashlib.sha256(CONTENT).digest()
_ENCODINGS = {
    "as signed": _em(_SHA256_PREFIX + _DIGEST),
    "DigestInfo without NULL": _em(_SHA256_PREFIX_NO_NULL + _DIGEST),
    "SHA-1 DigestInfo": _em(_SHA1_PREFIX + hashlib.sha1(CONTENT).digest()),
    "SHA-512 DigestInfo": _em(_SHA512_PREFIX + hashlib.sha512(CONTENT).digest()),
    "SHA-256 digest in a SHA-512 DigestInfo": _em(_SHA512_PREFIX + _DIGEST + bytes(32)),
    "bare digest, no DigestInfo": _em(_DIGEST),
    "block type 2": _em(_SHA256_PREFIX + _DIGEST, block=b"\x00\x02"),
    "padding not 0xFF": _em(_SHA256_PREFIX + _DIGEST, fill=0xFE),
    "leading byte not 0": _em(_SHA256_PREFIX + _DIGEST, block=b"\x01\x01"),
    "garbage after the digest": _em(_SHA256_PREFIX + _DIGEST + b"\x00" * 40),
    "garbage after the digest, short padding": (
        b"\x00\x01"
        + b"\xff" * 8
        + b"\x00"
        + _SHA256_PREFIX
        + _DIGEST
        + b"\x5a" * (256 - 11 - len(_SHA256_PREFIX) - 32)
    ),
    "no zero separator": b"\x00\x01" + b"\xff" * (256 - 2 - 51) + _SHA256_PREFIX + _DIGEST,
    "the block type after leading zero bytes": (
        b"\x00" * (256 - 3 - 7 - 51)
        + b"\x00\x01"
        + b"\xff" * 7
        + b"\x00"
        + _SHA256_PREFIX
        + _DIGEST
    )[-256:],
    "digest of other content": _em(_SHA256_PREFIX + hashlib.sha256(CONTENT + b"!").digest()),
}


@pytest.mark.parametrize("name", sorted(_ENCODINGS))
def test_verify_rsa256_accepts_exactly_what_cryptography_verify_accepts(name: str) -> None:
    em = _ENCODINGS[name]
    assert len(em) == 256, name
    if int.from_bytes(em, "big") >= private_key().private_numbers().public_numbers.n:
        pytest.fail(f"{name}: the encoding is not below the modulus; build it differently")
    signature = _raw_signature(em)
    accepted = _verify_rsa256_accepts(signature, CONTENT)
    assert accepted == _cryptography_accepts(signature, CONTENT)
    assert accepted == (name == "as signed")


def test_verify_rsa256_on_signatures_of_other_lengths_and_values() -> None:
    good = _raw_signature(_ENCODINGS["as signed"])
    n = private_key().private_numbers().public_numbers.n
    for signature in (
        good[1:],
        good + b"\x00",
        b"\x00" + good,
        b"",
        bytes(256),
        n.to_bytes(256, "big"),
        (n + int.from_bytes(good, "big")).to_bytes(257, "big"),
        private_key().sign(CONTENT + b"!", padding.PKCS1v15(), hashes.SHA256()),
        private_key().sign(CONTENT, padding.PKCS1v15(), hashes.SHA512()),
        private_key().sign(
            CONTENT, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256()
        ),
    ):
        assert not _verify_rsa256_accepts(signature, CONTENT)
        assert not _cryptography_accepts(signature, CONTENT)
    assert _verify_rsa256_accepts(good, CONTENT)


@cache
def large_key(bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@pytest.mark.parametrize("bits", [3072, 4096])
def test_verify_rsa256_agrees_with_cryptography_on_larger_keys(bits: int) -> None:
    key = large_key(bits)
    size = bits // 8
    encodings = {
        "as signed": _em(_SHA256_PREFIX + _DIGEST, size),
        "DigestInfo without NULL": _em(_SHA256_PREFIX_NO_NULL + _DIGEST, size),
        "garbage after the digest": _em(_SHA256_PREFIX + _DIGEST + bytes(40), size),
        "SHA-512 DigestInfo": _em(_SHA512_PREFIX + hashlib.sha512(CONTENT).digest(), size),
        "digest of other content": _em(
            _SHA256_PREFIX + hashlib.sha256(CONTENT + b"!").digest(), size
        ),
    }
    for name, em in encodings.items():
        signature = _raw_signature(em, key)
        accepted = _verify_rsa256_accepts(signature, CONTENT, key.public_key())
        assert accepted == _cryptography_accepts(signature, CONTENT, key.public_key())
        assert accepted == (name == "as signed"), name
    assert not _verify_rsa256_accepts(_raw_signature(encodings["as signed"], key), CONTENT)


@settings(max_examples=200, deadline=None)
@given(flip=st.integers(0, 256 * 8 - 1), content=st.binary(max_size=300))
def test_verify_rsa256_agrees_with_cryptography_on_flipped_encodings(
    flip: int, content: bytes
) -> None:
    em = bytearray(_em(_SHA256_PREFIX + hashlib.sha256(content).digest()))
    em[flip // 8] ^= 1 << (flip % 8)
    n = private_key().private_numbers().public_numbers.n
    if int.from_bytes(em, "big") >= n:
        return  # not a signature value at all (both refuse; covered above)
    signature = _raw_signature(bytes(em))
    assert _verify_rsa256_accepts(signature, content) == _cryptography_accepts(signature, content)
    assert not _verify_rsa256_accepts(signature, content)


# -- properties ------------------------------------------------------------------------------

header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=40
)
header_text = header_text.filter(lambda s: s.strip() != "")
any_text = st.text(st.characters(exclude_categories=()), max_size=60)


@settings(max_examples=150, deadline=None)
@given(
    body=st.binary(max_size=2000),
    path=st.text(st.characters(exclude_categories=["Cs"]), max_size=60),
    client_id=header_text,
    request_time=header_text,
    key_version=st.one_of(st.none(), st.text("0123456789abcXYZ", min_size=1, max_size=5)),
)
def test_verify_of_sign_holds(
    body: bytes, path: str, client_id: str, request_time: str, key_version: str | None
) -> None:
    header = sign(private_key(), "POST", path, client_id, request_time, body, key_version)
    v = Verifier({None: public_key()}, [client_id])
    hdrs = headers(header, client_id=client_id, request_time=request_time)
    assert v.verify("POST", path, hdrs, body) == VerifiedRequest(
        client_id, request_time, key_version
    )


header_names = st.sampled_from(
    ["Client-Id", "client-id", "CLIENT-ID", "Request-Time", "request-time", "Signature",
     "SIGNATURE", "signature", "Content-Type", "X-Other"]
)  # fmt: skip
signature_values = st.one_of(
    any_text,
    st.builds(lambda s: "algorithm=RSA256,keyVersion=1,signature=" + s, any_text),
    st.builds(
        lambda v, s: f"algorithm=RSA256,keyVersion={v},signature={s}",
        any_text,
        st.binary(max_size=300).map(lambda b: quote(base64.b64encode(b).decode(), safe="")),
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    hdrs=st.dictionaries(header_names, any_text, max_size=6),
    signature=st.one_of(st.none(), signature_values),
    path=any_text,
    body=st.binary(max_size=200),
)
def test_garbage_requests_raise_only_signature_rejected(
    hdrs: dict[str, str], signature: str | None, path: str, body: bytes
) -> None:
    if signature is not None:
        hdrs = {k: v for k, v in hdrs.items() if k.lower() != "signature"} | {
            "Signature": signature
        }
    hdrs.setdefault("Client-Id", CLIENT_ID)
    v = Verifier(
        {"1": public_key(), None: public_key("test_public_v2.pem")}, [CLIENT_ID, *hdrs.values()]
    )
    with pytest.raises(SignatureRejected):
        v.verify("POST", path, hdrs, body)


@settings(max_examples=400, deadline=None)
@given(value=st.one_of(any_text, signature_values))
def test_parse_signature_header_raises_only_signature_rejected(value: str) -> None:
    try:
        parsed = parse_signature_header(value)
    except SignatureRejected:
        return
    assert parsed.algorithm == "RSA256"
