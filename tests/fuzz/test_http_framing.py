"""Headers, request targets, sizes, framing and encodings over real HTTP, written byte for byte.

Signature headers missing, repeated, overlong, non-ASCII, with CR/LF injected; Content-Type
variants; Content-Length lies; chunked bodies good and broken; Transfer- and Content-Encoding the
bridge does not speak; encoded, doubled, dotted and absolute request targets with query strings.
Every reply is checked by `FuzzTarget.check` (httpkit.py).
"""

from __future__ import annotations

import gzip
import zlib
from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st

from paynotify_bridge.app import signed_path
from tests.bridge.conftest import NOTIFY_PATH
from tests.fuzz.bodies import SAMPLES
from tests.fuzz.conftest import MAX_BODY
from tests.fuzz.figures import fuzz_settings
from tests.fuzz.httpkit import (
    FuzzTarget,
    Header,
    RawReply,
    RawRequest,
    chunked,
    http_bytes,
    notify_headers,
)

BODY = SAMPLES["payment_result_success"]
SIGNATURE_HEADERS = ("Client-Id", "Request-Time", "Signature")
NOT_IMPLEMENTED = frozenset({501})  # RFC 9112 §6.1: an unknown transfer coding


# -- headers -------------------------------------------------------------------------------------

HEADER_VALUES: list[bytes] = [
    b"", b" ", b"A" * 8192, b"B" * 70_000, b"C" * 300_000, b"\xe9\xff", b"caf\xc3\xa9",
    b"a\r\n b", b"a\rb", b"a\nb", b"a\r\nX-Injected: 1", b"a\r\n\r\nGET / HTTP/1.1", b"a\x00b",
    b"a\tb", b"  padded  ", b"algorithm=RSA256,keyVersion=1,signature=" + b"%2B" * 3000,
    b"algorithm=rsa256,keyVersion=1,signature=AAAA", b"algorithm=RSA256,keyVersion=,signature=A",
    b"algorithm=RSA256,keyVersion=1,signature=%zz%", b"keyVersion=1,signature=AAAA",
    b"algorithm=RSA256," + b",".join(b"f%d=" % i for i in range(4000)) + b",signature=AAAA",
    b"SANDBOX_5Y3A2N2YEB3002022", b"2019-07-12T12:08:56.253+05:30",
]  # fmt: skip
EXTRA_HEADERS: list[tuple[bytes, bytes]] = [
    (b"X-Request-Id", b"../../etc/passwd"), (b"X-Request-Id", b"x" * 5000),
    (b"X-Request-Id", b"ok-id-1"), (b"Content-Encoding", b"gzip"),
    (b"Content-Encoding", b"identity"), (b"Expect", b"100-continue"), (b"Expect", b"nonsense"),
    (b"Transfer-Encoding", b"identity"), (b"Connection", b"keep-alive, Upgrade"),
    (b"Upgrade", b"h2c"), (b"Bad Name", b"x"), (b"Caf\xe9", b"x"), (b"", b"x"),
    (b" Leading-Space", b"x"), (b"X-Folded", b"a\r\n continued"), (b"Content-Type", b"text/plain"),
    (b"Client-Id", b"SANDBOX_5Y3A2N2YEB3002022"), (b"Forwarded", b"for=1.2.3.4"),
    (b"X-Many", b"v," * 4000),
]  # fmt: skip

header_edits = st.one_of(
    st.tuples(st.just("remove"), st.sampled_from([*SIGNATURE_HEADERS, "Content-Type"])),
    st.tuples(st.just("repeat"), st.sampled_from([*SIGNATURE_HEADERS, "Content-Type"])),
    st.tuples(st.just("case"), st.sampled_from([*SIGNATURE_HEADERS, "Content-Type"])),
    st.tuples(
        st.just("value"),
        st.sampled_from([*SIGNATURE_HEADERS, "Content-Type"]),
        st.sampled_from(HEADER_VALUES),
    ),
    st.tuples(st.just("add"), st.sampled_from(EXTRA_HEADERS)),
)


def edit_headers(headers: list[Header], edits: list[tuple[object, ...]]) -> list[Header]:
    out = list(headers)
    for edit in edits:
        kind, name = edit[0], edit[1]
        if kind == "remove":
            out = [(k, v) for k, v in out if str(k).lower() != str(name).lower()]
        elif kind == "repeat":
            out += [(k, v) for k, v in out if str(k).lower() == str(name).lower()]
        elif kind == "case":
            out = [(str(k).swapcase() if k == name else k, v) for k, v in out]
        elif kind == "value":
            value = edit[2]
            assert isinstance(value, bytes)
            out = [(k, value if str(k).lower() == str(name).lower() else v) for k, v in out]
        elif kind == "add":
            assert isinstance(name, tuple)
            out.append(name)
    return out


def signature_intact(original: list[Header], edited: list[Header]) -> bool:
    """Whether each signature header is still there exactly once with the value that was signed
    (names compare case-insensitively, values after HTTP's optional whitespace is stripped)."""

    def values(headers: list[Header], name: str) -> list[bytes]:
        return [
            _bytes(v).strip(b" \t")
            for k, v in headers
            if _bytes(k).lower() == name.lower().encode()
        ]

    return all(
        len(values(edited, name)) == 1 and values(edited, name) == values(original, name)
        for name in SIGNATURE_HEADERS
    )


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("latin-1")


@fuzz_settings(160)
@given(
    edits=st.lists(header_edits, min_size=1, max_size=4),
    signing=st.sampled_from(["signed", "signed", "unsigned"]),
)
def test_header_edits_over_http(
    fuzz_target: FuzzTarget, edits: list[tuple[object, ...]], signing: str
) -> None:
    original = notify_headers(fuzz_target, BODY, signing=signing)
    headers = edit_headers(original, edits)
    data = http_bytes(NOTIFY_PATH, headers, BODY)
    signed = signing == "signed" and signature_intact(original, headers)
    transport_ok = NOT_IMPLEMENTED if _names(headers) & {b"transfer-encoding"} else frozenset()
    fuzz_target.check(
        RawRequest(
            data, f"headers {edits!r:.300}", signed=signed, body=BODY, transport_ok=transport_ok
        )
    )


def _names(headers: list[Header]) -> set[bytes]:
    return {_bytes(k).lower() for k, _ in headers}


CONTENT_TYPES: dict[str, bool] = {  # value -> may be accepted
    "application/json": True,
    "APPLICATION/JSON": True,
    "application/json;charset=utf-8": True,
    'application/json; charset="UTF-8"': True,
    "application/json; charset=utf8": True,
    "application/json;": True,
    "application/json; foo=bar": True,
    "application/json; charset": True,
    "application/json; charset=": False,
    "application/json; charset=latin-1": False,
    "application/json; charset=GBK": False,
    "application/json; charset=\xe9": False,
    "application/json, text/plain": False,
    "application/jsonx": False,
    "application/x-json": False,
    "text/json": False,
    "text/plain": False,
    "application/*": False,
    "*/*": False,
    "": False,
    ";;;": False,
    "=": False,
    '"': False,
    "multipart/form-data; boundary=x": False,
    "application/x-www-form-urlencoded": False,
    "application/json; charset=" + "u" * 9000: False,
}


def test_content_type_variants(fuzz_target: FuzzTarget) -> None:
    for value, acceptable in CONTENT_TYPES.items():
        for signing in ("signed", "unsigned"):
            headers = notify_headers(fuzz_target, BODY, signing=signing, content_type=None)
            headers.append(("Content-Type", value.encode("latin-1")))
            data = http_bytes(NOTIFY_PATH, headers, BODY)
            request = RawRequest(
                data, f"Content-Type {value[:40]!r}", signed=signing == "signed", body=BODY
            )
            reply = fuzz_target.check(request)
            if signing == "signed":
                expected = {200} if acceptable else {415}
                assert reply.status in expected, (value, reply)


# -- request targets -------------------------------------------------------------------------------

QUERIES = [
    "",
    "?",
    "?a=b",
    "?%ff",
    "?a=%00",
    "?q=" + "q" * 3000,
    "?a=b&a=c",
    "?signature=x",
    "#frag",
]


def _encode_some(path: str, chosen: list[bool], lower: bool) -> str:
    out = []
    for i, ch in enumerate(path):
        if ch != "/" and chosen[i % len(chosen)]:
            escaped = f"%{ord(ch):02X}"
            out.append(escaped.lower() if lower else escaped)
        else:
            out.append(ch)
    return "".join(out)


targets = st.builds(
    lambda prefix, encode, lower, tail, query, absolute: (
        ("http://127.0.0.1" if absolute else "")
        + prefix
        + _encode_some(NOTIFY_PATH, encode, lower)[1:]
        + tail
        + query
    ),
    prefix=st.sampled_from(["/", "//", "/./", "/alipay/../", "/%2e/", "/%2F"]),
    encode=st.lists(st.booleans(), min_size=1, max_size=8),
    lower=st.booleans(),
    tail=st.sampled_from(["", "/", "//", "/.", "/..", ";jsessionid=1", "%3F", "%23", "%00", "%2F"]),
    query=st.sampled_from(QUERIES),
    absolute=st.booleans(),
)


@fuzz_settings(120)
@given(target=targets, signing=st.sampled_from(["signed", "signed", "unsigned"]))
def test_request_targets_over_http(fuzz_target: FuzzTarget, target: str, signing: str) -> None:
    """Signed over the path as it is sent (what Alipay signs), so any target may be accepted
    when it routes to the notify resource; unsigned never."""
    path = signed_path({"REQUEST_URI": target})
    headers = notify_headers(fuzz_target, BODY, signing=signing, path=path)
    data = http_bytes(target, headers, BODY)
    fuzz_target.check(RawRequest(data, f"target {target!r}", signed=signing == "signed", body=BODY))


RAW_TARGETS: list[bytes] = [
    b"/alipay/notify\xff", b"/alipay/notify\x00", b"/alipay/ notify", b"/alipay/notify\t",
    b"", b"*", b"alipay/notify", b"/" + b"a" * 70_000, b"/alipay/notify?" + b"q" * 300_000,
    b"https://127.0.0.1/alipay/notify", b"//127.0.0.1/alipay/notify",
    b"/alipay/notify\r\nX-Injected: 1", b"/alipay/notify HTTP/1.1\r\nX: y",
]  # fmt: skip


def test_raw_request_targets(fuzz_target: FuzzTarget) -> None:
    for target in RAW_TARGETS:
        path = signed_path({"REQUEST_URI": target.decode("latin-1")})
        for signing in ("signed", "unsigned"):
            headers = notify_headers(fuzz_target, BODY, signing=signing, path=path)
            data = http_bytes(target, headers, BODY)
            request = RawRequest(
                data, f"raw target {target[:60]!r}", signed=signing == "signed", body=BODY
            )
            fuzz_target.check(request)


def test_a_malformed_ipv6_authority_in_the_target_is_answered_400(fuzz_target: FuzzTarget) -> None:
    """BUG (waitress 3.0.2): `urlsplit` raises ValueError("Invalid IPv6 URL") inside waitress's
    parser, which only catches UnicodeError there: the connection is dropped without a reply and
    an ERROR with a traceback is logged, for any unauthenticated client. Expected: 400."""
    for target in (b"http://[::1/alipay/notify", b"http://[x]/alipay/notify", b"https://[/"):
        headers = notify_headers(fuzz_target, BODY, signing="unsigned")
        reply = fuzz_target.check(
            RawRequest(http_bytes(target, headers, BODY), f"target {target!r}")
        )
        assert reply.status == 400, reply
    fuzz_target.assert_still_serving("AFTER-IPV6-TARGET")


# -- sizes -----------------------------------------------------------------------------------------


def sized(size: int) -> bytes:
    """A valid notification of exactly `size` bytes (a metadata string fills it)."""
    if size < len(BODY) + 20:
        return (BODY + b" " * size)[:size]
    head = BODY.rstrip()[:-1] + b',"metadata":"'
    return head + b"x" * (size - len(head) - 2) + b'"}'


SIZES = [0, 1, 100, MAX_BODY - 1, MAX_BODY, MAX_BODY + 1, 2 * MAX_BODY, 2 * MAX_BODY + 1,
         2 * MAX_BODY + 2, 10 * MAX_BODY]  # fmt: skip


def test_sizes_by_length_and_chunked(fuzz_target: FuzzTarget) -> None:
    for size in SIZES:
        body = sized(size)
        headers = notify_headers(fuzz_target, body)
        variants = {
            "Content-Length": http_bytes(NOTIFY_PATH, headers, body),
            "chunked": http_bytes(NOTIFY_PATH, headers, body, framing="chunked"),
            "chunked in 7-byte pieces": http_bytes(
                NOTIFY_PATH,
                [*headers, ("Transfer-Encoding", "chunked")],
                chunked(body, [7] * (size // 7 + 1)),
                framing="none",
            ),
        }
        for framing, data in variants.items():
            reply = fuzz_target.check(
                RawRequest(data, f"{size} bytes, {framing}", signed=True, body=body)
            )
            _assert_size_outcome(size, body, reply)
    fuzz_target.assert_still_serving("AFTER-SIZES")


def _assert_size_outcome(size: int, body: bytes, reply: RawReply) -> None:
    if size > MAX_BODY:
        assert reply.status == 413, (size, reply)
    elif size >= len(BODY) and body.startswith(BODY.rstrip()[:-1]):
        assert reply.status == 200, (size, reply)
    else:
        assert reply.status == 400, (size, reply)


# -- framing and encodings -------------------------------------------------------------------------


def _framing_cases(target: FuzzTarget) -> list[RawRequest]:
    body, n = BODY, len(BODY)
    signed = notify_headers(target, body)

    def raw(extra: list[Header], payload: bytes, **options: object) -> bytes:
        return http_bytes(NOTIFY_PATH, [*signed, *extra], payload, framing="none", **options)  # type: ignore[arg-type]

    def case(label: str, data: bytes, **kw: object) -> RawRequest:
        # Every case carries a valid signature over `body`: a 200 proves the app read it intact.
        kw.setdefault("body", body)
        kw.setdefault("signed", True)
        return RawRequest(data, label, **kw)  # type: ignore[arg-type]

    gz, deflated = gzip.compress(body), zlib.compress(body)
    cases = [
        case("Content-Length too short", raw([("Content-Length", str(n - 5))], body)),
        case(
            "Content-Length too long", raw([("Content-Length", str(n + 5))], body), complete=False
        ),
        case("Content-Length 0 with a body", raw([("Content-Length", "0")], body)),
        case("Content-Length negative", raw([("Content-Length", "-1")], body)),
        case("Content-Length with a sign", raw([("Content-Length", f"+{n}")], body)),
        case("Content-Length in hex", raw([("Content-Length", hex(n))], body)),
        case("Content-Length padded", raw([("Content-Length", f" {n} ")], body)),
        case("Content-Length huge", raw([("Content-Length", "9" * 30)], body)),
        case("Content-Length twice, same", raw([("Content-Length", str(n))] * 2, body)),
        case(
            "Content-Length twice, different",
            raw([("Content-Length", str(n)), ("Content-Length", str(n - 1))], body),
        ),
        case("Content-Length list", raw([("Content-Length", f"{n}, {n}")], body)),
        case(
            "Content-Length and chunked",
            raw([("Content-Length", str(n)), ("Transfer-Encoding", "chunked")], chunked(body)),
        ),
        case(
            "chunked upper case",
            raw([("Transfer-Encoding", "CHUNKED")], chunked(body)),
        ),
        case(
            "chunked twice",
            raw([("Transfer-Encoding", "chunked, chunked")], chunked(body)),
            transport_ok=NOT_IMPLEMENTED,
        ),
        case(
            "gzip then chunked transfer coding",
            raw([("Transfer-Encoding", "gzip, chunked")], chunked(gz)),
            transport_ok=NOT_IMPLEMENTED,
        ),
        case(
            "identity transfer coding",
            raw([("Transfer-Encoding", "identity"), ("Content-Length", str(n))], body),
            transport_ok=NOT_IMPLEMENTED,
        ),
        case(
            "chunked, then gzip",
            raw([("Transfer-Encoding", "chunked, gzip")], chunked(gz)),
            transport_ok=NOT_IMPLEMENTED,
        ),
        case("chunk size not hex", raw([("Transfer-Encoding", "chunked")], b"zz\r\n" + body)),
        case(
            "chunk size overflowing",
            raw([("Transfer-Encoding", "chunked")], b"f" * 40 + b"\r\n" + body),
            complete=False,  # announces 2**160 bytes: waitress waits for them (or max_body)
        ),
        case(
            "chunk size negative",
            raw([("Transfer-Encoding", "chunked")], b"-5\r\nhello\r\n0\r\n\r\n"),
        ),
        case(
            "chunk extension",
            raw(
                [("Transfer-Encoding", "chunked")],
                b"%x;name=value\r\n%s\r\n0\r\n\r\n" % (n, body),
            ),
        ),
        case(
            "chunk shorter than its size",
            raw([("Transfer-Encoding", "chunked")], b"%x\r\n%s\r\n0\r\n\r\n" % (n + 10, body)),
            complete=False,
        ),
        case(
            "chunk without its CRLF",
            raw([("Transfer-Encoding", "chunked")], b"%x\r\n%s0\r\n\r\n" % (n, body)),
        ),
        case(
            "no last chunk",
            raw([("Transfer-Encoding", "chunked")], chunked(body, final=False)),
            complete=False,
        ),
        case(
            "trailer after the last chunk",
            raw(
                [("Transfer-Encoding", "chunked")],
                chunked(body)[:-2] + b"Signature: forged\r\n\r\n",
            ),
        ),
        case("no framing at all", raw([], body)),
        case(
            "HTTP/1.0 without Content-Length",
            raw([], body, version=b"HTTP/1.0"),
        ),
        case(
            "HTTP/1.0 with Content-Length",
            raw([("Content-Length", str(n))], body, version=b"HTTP/1.0"),
        ),
        case("HTTP/2.0 request line", raw([("Content-Length", str(n))], body, version=b"HTTP/2.0")),
        case("lower-case version", raw([("Content-Length", str(n))], body, version=b"http/1.1")),
        case("no version", raw([("Content-Length", str(n))], body, version=b"")),
        case(
            "Expect 100-continue",
            raw([("Content-Length", str(n)), ("Expect", "100-continue")], body),
        ),
        case(
            "gzip Content-Encoding, compressed body signed",
            _signed_raw(target, gz, [("Content-Encoding", "gzip")]),
            body=gz,
        ),
        case(
            "deflate Content-Encoding, compressed body signed",
            _signed_raw(target, deflated, [("Content-Encoding", "deflate")]),
            body=deflated,
        ),
        case(
            "br Content-Encoding, garbage body signed",
            _signed_raw(target, b"\x8b\x02\x80garbage\x03", [("Content-Encoding", "br")]),
            body=b"\x8b\x02\x80garbage\x03",
        ),
    ]
    for method in (b"PUT", b"GET", b"HEAD", b"DELETE", b"PATCH", b"OPTIONS", b"post", b"P@ST",
                   b"M" * 5000, b"CONNECT", b"TRACE"):  # fmt: skip
        data = http_bytes(NOTIFY_PATH, signed, body, method=method)
        cases.append(case(f"method {method[:20]!r}", data, complete=method != b"HEAD"))
    pipelined = http_bytes(NOTIFY_PATH, signed, body).replace(b"Connection: close\r\n", b"")
    cases.append(case("pipelined garbage", pipelined + b"GARBAGE\r\n\r\n", replies=2))
    cases.append(case("pipelined twice", pipelined + pipelined, replies=2))
    return cases


def _signed_raw(target: FuzzTarget, body: bytes, extra: list[Header]) -> bytes:
    return http_bytes(NOTIFY_PATH, [*notify_headers(target, body), *extra], body)


def test_framing_and_encodings(fuzz_target: FuzzTarget) -> None:
    for request in _framing_cases(fuzz_target):
        fuzz_target.check(request, timeout=5.0)
    fuzz_target.assert_still_serving("AFTER-FRAMING")


def test_compressed_bodies_are_refused_and_not_stored(fuzz_target: FuzzTarget) -> None:
    """The bridge reads bodies as sent: a gzip body, however validly signed, is not JSON."""
    gz = gzip.compress(BODY)
    reply = fuzz_target.check(
        RawRequest(_signed_raw(fuzz_target, gz, [("Content-Encoding", "gzip")]), "gzip", body=gz)
    )
    assert reply.status in (400, 415), reply
    assert reply.json()["result"]["resultStatus"] == "F"


def test_encoded_path_and_query_are_signed_as_sent(fuzz_target: FuzzTarget) -> None:
    """A percent-encoded target signed as sent is accepted; signed decoded, it is not."""
    target = "/alipay/%6e%6Ftify?x=%ff"
    headers = notify_headers(fuzz_target, BODY, path=quote("/alipay/%6e%6Ftify", safe="/%"))
    ok = fuzz_target.check(
        RawRequest(http_bytes(target, headers, BODY), "encoded, as sent", signed=True, body=BODY)
    )
    assert ok.status == 200, ok
    headers = notify_headers(fuzz_target, BODY, path=NOTIFY_PATH)
    refused = fuzz_target.check(RawRequest(http_bytes(target, headers, BODY), "decoded", body=BODY))
    assert refused.status == 401, refused
