"""Raw HTTP against a real bridge, and the invariants every reply must keep.

Requests are written byte for byte on a socket (http.client refuses most of what a fuzzer wants
to send: bare CR, duplicated framing headers, non-ASCII targets), and the reply is read with
`http.client.HTTPResponse`, which also skips a `100 Continue`.

`FuzzTarget.check(request)` sends one request and asserts, for whatever came back:

- the request reached the app (the reply carries X-Request-Id):
    200   only for a validly signed request; exactly the SUCCESS bytes; one more receipt stored,
          or, for a body answered SUCCESS before, one more hit of the bridge's ack cache
          (or Falcon's empty answer to OPTIONS, with Allow: POST)
    404   Falcon's own JSON for a target that is not the notify path; 400/405 for another method
    503   only resultCode PROCESS_FAIL / status U (the documented hub states); UNKNOWN_EXCEPTION is
          a crash
    4xx   Alipay-shaped JSON, resultStatus F, an actionable resultMessage
- waitress refused the request before the app (no X-Request-Id): a 4xx (400, 413, 431), or a
  status the request declares acceptable (501 for a Transfer-Encoding other than chunked)
- no reply at all: only for a request declared incomplete
- anything but a 200/503: the hub's store holds exactly what it held before.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from paynotify_bridge.simulator import request_time_now
from tests.bridge.conftest import (
    NOTIFY_PATH,
    SUCCESS_BODY,
    Bridge,
    Collector,
    signed_headers,
    store_counts,
)
from tests.fuzz.figures import FIGURES
from tests.hubkit import ThreadedHub

__all__ = [
    "FuzzTarget",
    "RawReply",
    "RawRequest",
    "chunked",
    "exchange",
    "http_bytes",
    "notify_headers",
]

Header = tuple[str | bytes, str | bytes]
# Statuses waitress itself answers with (the app never saw the request).
TRANSPORT_REJECTIONS = frozenset({400, 413, 431})
# Reason texts of the base classes: a reply carrying only these does not say what to fix.
GENERIC_REASONS = frozenset(
    {"request rejected", "signature rejected", "the body is not a valid notification"}
)
MIN_MESSAGE_CHARS = 20


def _b(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("latin-1")


def chunked(body: bytes, sizes: Iterable[int] = (), *, final: bool = True) -> bytes:
    """`body` in chunked transfer coding: chunks of `sizes` (then the rest in one)."""
    out, rest = [], body
    for size in sizes:
        if not rest:
            break
        piece, rest = rest[: max(1, size)], rest[max(1, size) :]
        out.append(b"%x\r\n%s\r\n" % (len(piece), piece))
    if rest:
        out.append(b"%x\r\n%s\r\n" % (len(rest), rest))
    if final:
        out.append(b"0\r\n\r\n")
    return b"".join(out)


def http_bytes(
    target: str | bytes,
    headers: Sequence[Header],
    body: bytes,
    *,
    method: str | bytes = "POST",
    framing: str = "length",
    version: bytes = b"HTTP/1.1",
) -> bytes:
    """A whole request. framing: "length" adds Content-Length, "chunked" encodes the body and
    adds Transfer-Encoding, "none" adds nothing (the caller's headers frame it, or not)."""
    lines = [_b(method) + b" " + _b(target) + b" " + version, b"Host: 127.0.0.1"]
    lines += [_b(name) + b": " + _b(value) for name, value in headers]
    payload = body
    if framing == "length":
        lines.append(b"Content-Length: %d" % len(body))
    elif framing == "chunked":
        lines.append(b"Transfer-Encoding: chunked")
        payload = chunked(body)
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + payload


def notify_headers(
    target: Bridge | Any,
    body: bytes,
    *,
    signing: str = "signed",
    path: str = NOTIFY_PATH,
    content_type: str | None = "application/json; charset=UTF-8",
    request_time: str | None = None,
) -> list[Header]:
    """Headers for `body`: "signed" validly, "unsigned" (none of the three), "wrong-body" (a valid
    signature over other bytes), "unknown-client" (signed, but a Client-Id not allowed)."""
    keys = target.keys
    request_time = request_time or request_time_now()
    if signing == "unsigned":
        headers: dict[str, str] = {}
        if content_type is not None:
            headers["Content-Type"] = content_type
    elif signing == "wrong-body":
        headers = signed_headers(keys, body + b" ", path=path, content_type=content_type)
    elif signing == "unknown-client":
        headers = signed_headers(
            keys, body, path=path, client_id="SANDBOX_SOMEONE_ELSE", content_type=content_type
        )
    else:
        headers = signed_headers(
            keys, body, path=path, request_time=request_time, content_type=content_type
        )
    return list(headers.items())


@dataclass(frozen=True)
class RawRequest:
    """One request as bytes, and what the checker may accept for it."""

    data: bytes
    label: str
    # Validly signed for the path it targets: the only kind that may be answered 200.
    signed: bool = False
    # False: the request never completes (a short body, no final chunk); no reply is fine.
    complete: bool = True
    # Transport-level statuses acceptable for this request beyond TRANSPORT_REJECTIONS.
    transport_ok: frozenset[int] = frozenset()
    # The body as the app should read it (to match deliveries against accepted requests).
    body: bytes = b""
    # How many requests `data` holds (pipelining): as many replies are due.
    replies: int = 1


@dataclass(frozen=True)
class RawReply:
    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    error: str = ""

    @property
    def reached_app(self) -> bool:
        return "x-request-id" in self.headers

    def json(self) -> Any:
        return json.loads(self.body)


def exchange(base: str, data: bytes, *, timeout: float = 10.0) -> list[RawReply]:
    """Send `data` on a fresh connection, half-close it, and read every reply until the bridge
    closes (several for pipelined requests; none when the request never completed)."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    received, error = bytearray(), ""
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        with contextlib.suppress(OSError):  # the bridge may answer and close before the end
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            error = f"the connection was still open after {timeout}s"
        except ConnectionError as exc:
            error = f"{type(exc).__name__}: {exc}"
    return _parse_replies(bytes(received), error)


class _Stream(io.BytesIO):
    """The bytes received; `HTTPResponse` closes its file after each reply: this one stays open."""

    def close(self) -> None:
        pass


class _Received:
    """What `http.client.HTTPResponse` needs of a socket: a file over the bytes received."""

    def __init__(self, stream: _Stream) -> None:
        self._stream = stream

    def makefile(self, *args: object, **kwargs: object) -> _Stream:
        return self._stream


def _parse_replies(received: bytes, error: str) -> list[RawReply]:
    stream, replies = _Stream(received), []
    while stream.tell() < len(received):
        response = http.client.HTTPResponse(_Received(stream))  # type: ignore[arg-type]
        try:
            response.begin()  # skips a 100 Continue
            body = response.read()
        except http.client.HTTPException as exc:
            replies.append(RawReply(None, error=f"unreadable reply: {exc!r}"))
            break
        headers = {name.lower(): value for name, value in response.getheaders()}
        replies.append(RawReply(response.status, headers, body))
    if not replies:
        replies.append(RawReply(None, error=error or "closed without a reply"))
    return replies


class FuzzTarget:
    """A running bridge, its hub and an acking subscriber, with the invariant checks."""

    def __init__(self, bridge: Bridge, hub: ThreadedHub, subscriber: Collector) -> None:
        self.bridge = bridge
        self.hub = hub
        self.subscriber = subscriber
        self.accepted_bodies: set[bytes] = set()
        self.surface = "http"

    def __repr__(self) -> str:
        return f"FuzzTarget({self.base})"

    @property
    def keys(self) -> Any:
        return self.bridge.keys

    @property
    def base(self) -> str:
        return self.bridge.base

    def check(self, request: RawRequest, *, timeout: float = 10.0) -> RawReply:
        """Send `request`; assert every invariant of the module docstring; count it.

        Returns the first reply (the one to the request; later ones answer pipelined requests or
        bytes left over after a short Content-Length).
        """
        before = store_counts(self.hub)
        hits_before = self._cache_hits()
        replies = exchange(self.base, request.data, timeout=timeout)
        after = store_counts(self.hub)
        cache_hits = int(self._cache_hits() - hits_before)
        problems: list[tuple[str, str]] = []
        for reply in replies:
            outcome = self._judge(request, reply, problems)
            FIGURES.tried(self.surface, outcome)
        if len(replies) < request.replies and request.complete:
            problems.append(("crashes", f"{len(replies)} replies to {request.replies} requests"))
        # A cache hit answers a body that got SUCCESS before: in an earlier exchange, or earlier
        # in this one (pipelined requests), from the hub.
        successes = sum(reply.body == SUCCESS_BODY for reply in replies)
        earlier = request.body in self.accepted_bodies
        if cache_hits and not earlier and successes <= cache_hits:
            problems.append(("crashes", f"{cache_hits} cache hits for a body never accepted"))
        self._judge_store(replies, before, after, cache_hits, problems)
        if any(reply.body == SUCCESS_BODY for reply in replies):
            self.accepted_bodies.add(request.body)
        for kind, text in problems:
            FIGURES.failed(kind, f"{request.label}: {text}")
        assert not problems, (
            f"{request.label}: {problems}\nrequest: {request.data[:600]!r}\nreplies: {replies}"
        )
        return replies[0]

    def _judge(self, request: RawRequest, reply: RawReply, problems: list[tuple[str, str]]) -> str:
        if reply.status is None:
            if request.complete:
                problems.append(("crashes", f"no reply to a complete request ({reply.error})"))
            return "no reply (incomplete request)"
        if reply.reached_app:
            return self._judge_app(request, reply, problems)
        allowed = TRANSPORT_REJECTIONS | request.transport_ok
        if reply.status not in allowed:
            kind = "unexpected_5xx" if reply.status >= 500 else "crashes"
            problems.append((kind, f"waitress answered {reply.status}"))
        return f"{reply.status} from waitress (before the app)"

    @staticmethod
    def _judge_store(
        replies: list[RawReply],
        before: tuple[int, int],
        after: tuple[int, int],
        cache_hits: int,
        problems: list[tuple[str, str]],
    ) -> None:
        """One receipt or cache hit per SUCCESS, at most one more receipt per 503 (stored, not
        yet acked), none else."""
        successes = sum(reply.body == SUCCESS_BODY for reply in replies)
        pending = sum(reply.status == 503 for reply in replies)
        added_notifications, added_receipts = after[0] - before[0], after[1] - before[1]
        if cache_hits > successes:
            problems.append(("crashes", f"{cache_hits} cache hits for {successes} SUCCESS"))
        successes -= cache_hits
        if added_receipts < successes:
            problems.append(("crashes", f"{successes} SUCCESS, store {before} -> {after}"))
        if added_receipts > successes + pending or added_notifications > added_receipts:
            statuses = [reply.status for reply in replies]
            problems.append(("stored_from_rejected", f"{statuses}: store {before} -> {after}"))

    def _cache_hits(self) -> float:
        return self.bridge.metric("paynotify_bridge_ack_cache_hits_total")

    def _judge_app(
        self, request: RawRequest, reply: RawReply, problems: list[tuple[str, str]]
    ) -> str:
        status = reply.status or 0
        if status == 200 and not reply.body and "allow" in reply.headers:
            return "200 empty with Allow (Falcon's OPTIONS answer)"
        if reply.headers.get("content-type") != "application/json":
            problems.append(("crashes", f"{status} with content-type {reply.headers}"))
        try:
            document = reply.json()
        except ValueError:
            problems.append(("crashes", f"{status} with a body that is not JSON"))
            return f"{status} (not JSON)"
        if status == 200:
            if not request.signed:
                problems.append(("accepted_unsigned", "SUCCESS for a request not validly signed"))
            if reply.body != SUCCESS_BODY:
                problems.append(("crashes", f"200 with body {reply.body[:200]!r}"))
            return "200 SUCCESS"
        result = document.get("result") if isinstance(document, dict) else None
        falcon_error = isinstance(document, dict) and "title" in document and result is None
        method = request.data.split(b" ", 1)[0]
        if falcon_error and (status == 404 or (method != b"POST" and status in (400, 405))):
            return f"{status} from Falcon's router (not the notify path or method)"
        if not isinstance(result, dict):
            problems.append(("crashes", f"{status} without an Alipay result: {reply.body[:200]!r}"))
            return f"{status} (not Alipay-shaped)"
        code, letter = result.get("resultCode"), result.get("resultStatus")
        message = str(result.get("resultMessage") or "")
        if status == 503:
            if code != "PROCESS_FAIL" or letter != "U":
                problems.append(("crashes", f"503 {code}/{letter}: {message}"))
            return f"503 {code} (hub state, documented)"
        if status >= 500:
            problems.append(("unexpected_5xx", f"{status} {code}: {message}"))
            return f"{status} {code}"
        if 400 <= status < 500:
            if letter != "F" or b"SUCCESS" in reply.body:
                problems.append(("crashes", f"{status} with resultStatus {letter}"))
            if len(message) < MIN_MESSAGE_CHARS or message.lower() in GENERIC_REASONS:
                problems.append(
                    ("crashes", f"{status} with a message nobody can act on: {message}")
                )
            return f"{status} {code}"
        problems.append(("crashes", f"unexpected status {status}"))
        return str(status)

    def assert_still_serving(self, payment_id: str) -> None:
        """A fresh, valid, signed notification still goes all the way to SUCCESS."""
        from paynotify_bridge.simulator import builtin_samples, with_overrides

        body = with_overrides(
            builtin_samples()["payment_result_success"], {"paymentId": payment_id}
        )
        data = http_bytes(NOTIFY_PATH, notify_headers(self, body), body)
        reply = self.check(RawRequest(data, "still serving", signed=True, body=body))
        assert reply.status == 200, reply

    def assert_deliveries_came_from_accepted_requests(self) -> None:
        with self.subscriber.lock:
            delivered = [m.raw_json for m in self.subscriber.seen]
        foreign = [body for body in delivered if body not in self.accepted_bodies]
        if foreign:
            FIGURES.failed("stored_from_rejected", f"delivered but never accepted: {foreign[0]!r}")
        assert not foreign, f"{len(foreign)} deliveries of bodies never accepted"
