"""Signed Alipay notification requests for the load generator, precomputed and cached.

Each record is one complete HTTP/1.1 request (headers and an ~820-byte body with a distinct
paymentId/paymentRequestId), signed as Alipay signs: RSASSA-PKCS1-v1_5/SHA-256 over
``POST <path>\\n<Client-Id>.<Request-Time>.<body>``. Signing costs ~0.7 ms per record on this
machine, so records are signed in a process pool once and kept in a cache folder; later runs reuse
them (a longer corpus extends the cached one).

File layout (what ``wrk_post.lua`` reads): fixed-size records of RECORD_SIZE bytes; each starts with
the request length as 8 ASCII digits, then the request, then padding. Record i is at i*RECORD_SIZE.
"""

from __future__ import annotations

import base64
import hashlib
import json
import multiprocessing
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = [
    "CLIENT_ID",
    "NOTIFY_PATH",
    "RECORD_SIZE",
    "Corpus",
    "ensure_corpus",
    "read_record",
]

CLIENT_ID = "BENCH_5Y3A2N2YEB3002022"
NOTIFY_PATH = "/alipay/notify"
RECORD_SIZE = 1536
LENGTH_DIGITS = 8
CHUNK = 2000
# Every body has the same shape and size; only the identity fields and times differ.
_BODY_TEMPLATE = {
    "notifyType": "PAYMENT_RESULT",
    "result": {"resultCode": "SUCCESS", "resultStatus": "S", "resultMessage": "success."},
    "paymentRequestId": "",
    "paymentId": "",
    "paymentAmount": {"currency": "JPY", "value": "200"},
    "actualPaymentAmount": {"currency": "CNY", "value": "1292"},
    "paymentCreateTime": "2026-03-02T19:11:19-08:00",
    "paymentTime": "2026-03-02T19:12:11-08:00",
    "paymentQuote": {
        "quoteId": "",
        "quoteCurrencyPair": "JPY/CNY",
        "quotePrice": 0.064622,
        "guaranteed": False,
    },
    "grossSettlementAmount": {"currency": "USD", "value": "133"},
    "pspCustomerInfo": {
        "pspName": "ALIPAYCN",
        "pspCustomerId": "20885028136924G7",
        "displayCustomerId": "buy*@alitest.com",
    },
    "acquirerReferenceNo": "",
    "paymentMethodType": "CONNECT_WALLET",
    "metadata": '{"orderNo":"","channel":"bench"}',
}


@dataclass(frozen=True)
class Corpus:
    """A cached file of signed requests and the key that verifies them."""

    path: Path
    count: int
    public_key_pem: Path
    private_key_pem: Path
    client_id: str = CLIENT_ID
    notify_path: str = NOTIFY_PATH
    record_size: int = RECORD_SIZE


def body_for(index: int, tag: str) -> bytes:
    """The notification body of record `index`: compact JSON, distinct identity per index."""
    doc = json.loads(json.dumps(_BODY_TEMPLATE))
    doc["paymentRequestId"] = f"bench-{tag}-{index:09d}"
    doc["paymentId"] = f"2026030219401080010{index:09d}{tag[:4]}"
    doc["paymentQuote"]["quoteId"] = f"Q{index:012d}"
    doc["acquirerReferenceNo"] = f"ACQ{tag}{index:012d}"
    doc["metadata"] = doc["metadata"].replace('"orderNo":""', f'"orderNo":"ORD{index:010d}"')
    return json.dumps(doc, separators=(",", ":")).encode()


def request_time_for(index: int, resend: int = 0) -> str:
    """Record `index`'s Request-Time; `resend` 1 is the retry 2 minutes later (signed anew)."""
    millis = index % 1000
    seconds = (index // 1000) % 60
    return f"2026-03-02T19:{12 + 2 * resend:02d}:{seconds:02d}.{millis:03d}-08:00"


def raw_request(key: rsa.RSAPrivateKey, index: int, tag: str, resend: int = 0) -> bytes:
    """One complete HTTP/1.1 request, signed. Host carries no port: the record serves any port."""
    body = body_for(index, tag)
    request_time = request_time_for(index, resend)
    content = f"POST {NOTIFY_PATH}\n{CLIENT_ID}.{request_time}.".encode() + body
    signature = base64.b64encode(key.sign(content, padding.PKCS1v15(), hashes.SHA256()))
    header = (
        f"POST {NOTIFY_PATH} HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\n"
        "Content-Type: application/json; charset=UTF-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Client-Id: {CLIENT_ID}\r\n"
        f"Request-Time: {request_time}\r\n"
        "Signature: algorithm=RSA256,keyVersion=1,signature="
        f"{quote(signature.decode('ascii'), safe='')}\r\n"
        "\r\n"
    )
    return header.encode() + body


def _record(request: bytes) -> bytes:
    head = f"{len(request):0{LENGTH_DIGITS}d}".encode()
    padded = head + request
    if len(padded) > RECORD_SIZE:
        raise ValueError(f"a request of {len(request)} bytes does not fit RECORD_SIZE")
    return padded.ljust(RECORD_SIZE, b" ")


_worker_key: rsa.RSAPrivateKey | None = None


def _init_worker(private_pem: bytes) -> None:
    global _worker_key
    key = serialization.load_pem_private_key(private_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    _worker_key = key


def _sign_chunk(args: tuple[int, int, str, int]) -> bytes:
    start, stop, tag, resend = args
    assert _worker_key is not None
    return b"".join(_record(raw_request(_worker_key, i, tag, resend)) for i in range(start, stop))


def _chunks(start: int, stop: int, tag: str, resend: int) -> Iterator[tuple[int, int, str, int]]:
    for low in range(start, stop, CHUNK):
        yield low, min(low + CHUNK, stop), tag, resend


def _ensure_keys(cache: Path) -> tuple[Path, Path, bytes]:
    private_path, public_path = cache / "bench-private.pem", cache / "bench-public.pem"
    if not private_path.exists() or not public_path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        public_path.write_bytes(public_pem)
        private_path.write_bytes(private_pem)
    return private_path, public_path, private_path.read_bytes()


def ensure_corpus(
    cache: Path, count: int, processes: int | None = None, *, resend: int = 0
) -> Corpus:
    """At least `count` signed records in `cache`, signing only the ones missing.

    `resend` 1: record i has record i's body, sent again 2 minutes later and signed anew (another
    Request-Time, so another Signature), as a retry that Alipay re-signs would be."""
    cache.mkdir(parents=True, exist_ok=True)
    private_path, public_path, private_pem = _ensure_keys(cache)
    tag = hashlib.sha256(public_path.read_bytes()).hexdigest()[:8]
    path = cache / (f"requests-{tag}.bin" if not resend else f"requests-{tag}-resend{resend}.bin")
    have = path.stat().st_size // RECORD_SIZE if path.exists() else 0
    if have < count:
        _extend(path, have, count, (tag, resend), private_pem, processes)
    return Corpus(path, max(have, count), public_path, private_path)


def _extend(
    path: Path,
    have: int,
    count: int,
    kind: tuple[str, int],
    private_pem: bytes,
    processes: int | None,
) -> None:
    started = time.monotonic()
    workers = processes or os.cpu_count() or 1
    print(
        f"signing {count - have} requests (RSA-2048, ~0.7 ms each, {workers} processes); "
        f"cached in {path.parent} for later runs",
        flush=True,
    )
    with open(path, "r+b" if path.exists() else "wb") as out:
        out.truncate(have * RECORD_SIZE)
        out.seek(have * RECORD_SIZE)
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers, initializer=_init_worker, initargs=(private_pem,)) as pool:
            for block in pool.imap(_sign_chunk, _chunks(have, count, *kind)):
                out.write(block)
    print(f"signed in {time.monotonic() - started:.1f} s", flush=True)


def read_record(corpus: Corpus, index: int) -> bytes:
    """Request `index` as raw bytes (for warm-up and checks from Python)."""
    with open(corpus.path, "rb") as f:
        f.seek(index * corpus.record_size)
        record = f.read(corpus.record_size)
    length = int(record[:LENGTH_DIGITS])
    return record[LENGTH_DIGITS : LENGTH_DIGITS + length]
