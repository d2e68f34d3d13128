"""The bridge's Falcon app: a thin transport around verify -> parse -> publish.

`create_app(config, verifier, publisher)` builds it; nothing is created at import time.

Routes:
    POST <config.path>   Alipay's notification; SUCCESS only when the hub says acknowledged
                         (or, for a retry of a body the hub said so of, from `ack_cache.py`,
                         answered by `_RepeatShortcut` before Falcon sees it; byte for byte a
                         request verified before is not verified again)
    GET  /healthz        the process is alive
    GET  /readyz         a hub answers (503 otherwise)
    GET  /metrics        Prometheus text

The signed path is the request path *as it arrived*, taken from the raw request target
(waitress's REQUEST_URI) with its percent-encoding untouched and without the query string, as
Alipay's SDKs verify it (Java: `HttpServletRequest.getRequestURI()`). A proxy in front of the bridge
must not rewrite it.

Every failure is a `BridgeError` raised by the pure code or the publisher and mapped to a reply in
one place (`_ErrorReplies`, with `replies.py`); an unexpected exception becomes 503/U so Alipay
retries.
"""

from __future__ import annotations

import io
import logging
import random
import re
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Protocol
from urllib.parse import quote

import falcon
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import CollectorRegistry

from paynotify.v1 import hub_pb2, notification_pb2
from paynotify_bridge.ack_cache import NO_FINGERPRINT, AckCache
from paynotify_bridge.config import BridgeConfig
from paynotify_bridge.errors import (
    BodyTooLarge,
    BridgeError,
    MalformedBody,
    SignatureRejected,
    UnsupportedMediaType,
)
from paynotify_bridge.masking import safe_summary
from paynotify_bridge.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from paynotify_bridge.metrics import BridgeMetrics
from paynotify_bridge.parse import parse_notification
from paynotify_bridge.publisher import PublishResult
from paynotify_bridge.replies import (
    SUCCESS_BODY,
    UNEXPECTED_BODY,
    UNEXPECTED_STATUS,
    error_body,
    outcome_of,
)
from paynotify_bridge.signature import VerifiedRequest

__all__ = [
    "REQUEST_ID_HEADER",
    "Clock",
    "IdGenerator",
    "NotificationPublisher",
    "RequestVerifier",
    "UnverifiedRequests",
    "check_content_type",
    "create_app",
    "new_request_id",
    "read_body",
    "signed_path",
]

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER: Final = "X-Request-Id"
_REQUEST_ID_ENVIRON_KEY: Final = "HTTP_X_REQUEST_ID"
JSON_TYPE: Final = "application/json"
RESERVED_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})
# Content-Type values that passed check_content_type, so the same text is not parsed again;
# bounded, as the values come from the network.
_ACCEPTED_CONTENT_TYPES: set[str | None] = set()
_MAX_ACCEPTED_CONTENT_TYPES: Final = 16
# The headers the verifier reads (Client-Id, Request-Time, Signature) and their WSGI environ keys.
# Falcon's req.headers holds exactly these environ values under these names (the server has
# joined repeated headers already), but builds a dict of every header to get there.
_SIGNED_HEADERS: Final = (
    ("Client-Id", "HTTP_CLIENT_ID"),
    ("Request-Time", "HTTP_REQUEST_TIME"),
    ("Signature", "HTTP_SIGNATURE"),
)
# An id a load balancer hands us is kept when it is this tame; otherwise we make our own.
_ACCEPTABLE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# A Content-Length `_RepeatShortcut` reads as a number; a longer one is the app's to refuse.
_MAX_LENGTH_DIGITS: Final = 12
# Where `_RepeatShortcut` leaves the (cache key, fingerprint) of a request it did not answer,
# and what verifying its signature gave: a VerifiedRequest, or the exception it raised.
_REPEAT_IDENTITY: Final = "paynotify.repeat_identity"
_VERIFICATION: Final = "paynotify.verification"
# The reply the app gives for SUCCESS, header for header and in Falcon's order.
_SUCCESS_STATUS: Final = "200 OK"
_SUCCESS_LENGTH: Final = str(len(SUCCESS_BODY))

Clock = Callable[[], float]
IdGenerator = Callable[[], str]
StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class RequestVerifier(Protocol):
    """`signature.Verifier`, or `UnverifiedRequests` for local development."""

    def verify(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> VerifiedRequest: ...


class NotificationPublisher(Protocol):
    """`publisher.HubPublisher`'s surface the app uses."""

    def publish(
        self, notification: notification_pb2.PaymentNotification, receipt: hub_pb2.Receipt
    ) -> PublishResult: ...

    def ready(self) -> bool: ...

    @property
    def hub_generation(self) -> int:
        """Grows whenever a hub may have restarted (and so changed its required groups)."""
        ...


# Request ids correlate log lines; they are not secrets. A generator seeded from os.urandom at
# start gives 128 random bits without a system call per request (os.urandom gives the GIL up
# during its getrandom call, `python -m bench.gilprobe`).
_REQUEST_ID_BITS: Final = random.Random()


def new_request_id() -> str:
    """32 random hex digits (as unique as uuid4, without building a UUID or a system call)."""
    return f"{_REQUEST_ID_BITS.getrandbits(128):032x}"


class UnverifiedRequests:
    """Accepts every request unsigned (`--insecure-skip-signature-check`): local development."""

    def verify(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> VerifiedRequest:
        logger.warning(
            "SIGNATURE NOT VERIFIED (--insecure-skip-signature-check): never in production"
        )
        lower = {name.lower(): value for name, value in headers.items()}
        return VerifiedRequest(lower.get("client-id", ""), lower.get("request-time", ""), None)


def signed_path(env: Mapping[str, Any]) -> str:
    """The path Alipay signed: the raw request target's path, percent-encoding as sent, no query."""
    raw = env.get("REQUEST_URI") or env.get("RAW_URI")
    if raw:
        path = str(raw)
        if path[:8].lower().startswith(("http://", "https://")):  # absolute-form request target
            path = "/" + path.split("://", 1)[1].partition("/")[2]
        path = path.split("?", 1)[0].split("#", 1)[0]
    else:  # a WSGI server without the raw target: re-quote the decoded path
        path = quote(str(env.get("SCRIPT_NAME", "")) + str(env.get("PATH_INFO", "")), safe="/;=,")
    # WSGI strings are bytes as latin-1; Alipay's path is UTF-8 text (a bad byte cannot verify).
    return path.encode("latin-1").decode("utf-8", "surrogateescape")


def create_app(
    config: BridgeConfig,
    verifier: RequestVerifier,
    publisher: NotificationPublisher,
    *,
    clock: Clock = time.time,
    request_ids: IdGenerator = new_request_id,
    registry: CollectorRegistry | None = None,
) -> WsgiApp:
    """The WSGI app; `registry` defaults to a fresh one (so apps never share counters)."""
    if config.path in RESERVED_PATHS:
        raise ValueError(f"--path {config.path} collides with the bridge's own {config.path}")
    metrics = BridgeMetrics(registry if registry is not None else CollectorRegistry())
    app = falcon.App(middleware=[_RequestIdMiddleware(request_ids)])
    ack_cache = (
        AckCache(config.ack_cache_size, config.ack_cache_ttl) if config.ack_cache_size else None
    )
    notify = _NotifyResource(config, verifier, publisher, metrics, clock, ack_cache)
    app.add_route(config.path, notify)
    app.add_route("/healthz", _HealthResource())
    app.add_route("/readyz", _ReadyResource(publisher))
    app.add_route("/metrics", _MetricsResource(metrics))
    replies = _ErrorReplies(metrics)
    app.add_error_handler(BridgeError, replies.bridge_error)
    # Falcon's own HTTPError handler stays in place (404, 405): Falcon picks the most specific one.
    app.add_error_handler(Exception, replies.unexpected)
    if ack_cache is None or config.insecure_skip_verification:
        return app
    return _RepeatShortcut(app, config, ack_cache, publisher, metrics, request_ids, verifier)


class _RequestIdMiddleware:
    def __init__(self, request_ids: IdGenerator) -> None:
        self._request_ids = request_ids

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.request_id = _request_id_of(req.env, self._request_ids)

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        request_id = getattr(req.context, "request_id", None)
        if request_id:
            resp.set_header(REQUEST_ID_HEADER, request_id)


def _request_id_of(env: Mapping[str, Any], request_ids: IdGenerator) -> str:
    """The load balancer's X-Request-Id when it is tame, else a new one."""
    given = env.get(_REQUEST_ID_ENVIRON_KEY)  # req.get_header(REQUEST_ID_HEADER), cheaper
    return given if given is not None and _ACCEPTABLE_REQUEST_ID.fullmatch(given) else request_ids()


class _RepeatShortcut:
    """WSGI in front of the Falcon app for the cheapest replies the bridge gives: Alipay's retries
    of a body the hub acknowledged (`ack_cache.py`), answered SUCCESS here without Falcon's
    request and response objects, routing and middleware. A request byte for byte one verified
    before is answered without verifying it again; any other is verified here, and answered when
    its body is remembered (a retry signed anew). The reply is the app's, header for header
    (X-Request-Id included), counted in the same metrics.

    Only the plain case is looked at: POST to the notification path with a Content-Type that
    `check_content_type` accepts, a Content-Length within the limit and the three signed
    headers. Anything else goes to the app unchanged. A request looked at but not answered goes
    to the app with the body it read, its cache key and fingerprint, and what verifying it gave
    (the app raises a verification error only after its own checks of the body, as before).
    """

    def __init__(
        self,
        app: WsgiApp,
        config: BridgeConfig,
        cache: AckCache,
        publisher: NotificationPublisher,
        metrics: BridgeMetrics,
        request_ids: IdGenerator,
        verifier: RequestVerifier,
    ) -> None:
        self._app = app
        self._verifier = verifier
        self._path = config.path
        self._limit = config.max_body_bytes
        self._cache = cache
        self._publisher = publisher
        self._metrics = metrics
        self._request_ids = request_ids

    def __call__(self, env: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        length = env.get("CONTENT_LENGTH", "")
        if (
            env.get("PATH_INFO") != self._path
            or env.get("REQUEST_METHOD") != "POST"
            or not (length.isascii() and length.isdigit() and len(length) <= _MAX_LENGTH_DIGITS)
            or not 0 < int(length) <= self._limit
            or not _acceptable_content_type(env.get("CONTENT_TYPE"))
        ):
            return self._app(env, start_response)
        body = env["wsgi.input"].read(int(length))
        env["wsgi.input"] = io.BytesIO(body)
        path = signed_path(env)
        identity = _repeat_identity(env, self._cache, path, body)
        if identity is None:
            return self._app(env, start_response)
        generation = self._publisher.hub_generation
        if self._cache.verified_before(*identity, generation):
            self._metrics.ack_cache_repeats.inc()
            return self._answer(env, start_response, "the same request")
        env[_REPEAT_IDENTITY] = identity
        if not body.strip():
            return self._app(env, start_response)  # refused as empty, before any signature check
        # Verified here, once: the app takes the outcome from the environ (`_verified`).
        try:
            verified = self._verifier.verify("POST", path, _signed_headers(env), body)
        except Exception as exc:  # raised again by the app, after its own checks of the body
            return self._app_with(env, start_response, exc)
        try:
            # identity[0] is cache.key(verified.client_id, body): the verifier read that header.
            remembered = self._cache.contains(identity[0], generation)
        except Exception:  # the app looks again, inside Falcon: its 503, counted and logged
            remembered = False
        if remembered:
            return self._answer(env, start_response, "a body")  # a retry signed anew
        return self._app_with(env, start_response, verified)

    def _app_with(
        self,
        env: dict[str, Any],
        start_response: StartResponse,
        verification: VerifiedRequest | Exception,
    ) -> Iterable[bytes]:
        """The app, with what verifying the request gave; the environ forgets it afterwards
        (an exception kept in it would hold its traceback's frames, this one's `env` included:
        a reference cycle per rejected request)."""
        env[_VERIFICATION] = verification
        del verification  # nor may this frame (the app's frames' caller) hold it
        try:
            return self._app(env, start_response)
        finally:
            env.pop(_VERIFICATION, None)

    def _answer(
        self, env: dict[str, Any], start_response: StartResponse, what: str
    ) -> Iterable[bytes]:
        """SUCCESS for a retry of an acknowledged body, as the app answers it."""
        request_id = _request_id_of(env, self._request_ids)
        self._metrics.count_success()
        _count_cache_hit(self._metrics, request_id, what)
        start_response(
            _SUCCESS_STATUS,
            [
                ("content-type", JSON_TYPE),
                (REQUEST_ID_HEADER.lower(), request_id),
                ("content-length", _SUCCESS_LENGTH),
            ],
        )
        return [SUCCESS_BODY]


def _acceptable_content_type(value: str | None) -> bool:
    """Whether `check_content_type` passes it (the app answers those that do not)."""
    try:
        check_content_type(value)
    except UnsupportedMediaType:
        return False
    return True


def _repeat_identity(
    env: Mapping[str, Any], cache: AckCache, path: str, body: bytes
) -> tuple[bytes, bytes] | None:
    """(cache key, fingerprint) of a request carrying the three signed headers, else None."""
    client_id = env.get("HTTP_CLIENT_ID")  # _SIGNED_HEADERS' keys, read without a loop: hot
    request_time = env.get("HTTP_REQUEST_TIME")
    signature = env.get("HTTP_SIGNATURE")
    if client_id is None or request_time is None or signature is None:
        return None
    key = cache.key(client_id, body)
    return key, cache.fingerprint(key, "POST", path, request_time, signature)


def _count_cache_hit(metrics: BridgeMetrics, request_id: str, what: str) -> None:
    """A SUCCESS answered from the ack cache: counted as such (and logged at DEBUG)."""
    metrics.ack_cache_hits.inc()
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "request %s: a retry of %s answered SUCCESS before, answered SUCCESS",
            request_id,
            what,
            extra={"request_id": request_id},
        )


class _NotifyResource:
    def __init__(
        self,
        config: BridgeConfig,
        verifier: RequestVerifier,
        publisher: NotificationPublisher,
        metrics: BridgeMetrics,
        clock: Clock,
        ack_cache: AckCache | None,
    ) -> None:
        self._config = config
        self._verifier = verifier
        self._publisher = publisher
        self._metrics = metrics
        self._clock = clock
        self._ack_cache = ack_cache

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        received_at = self._clock()
        body = read_body(req, self._config.max_body_bytes)
        path = signed_path(req.env)
        headers = _signed_headers(req.env)
        cache = self._ack_cache
        if cache is None:
            self._publish(req, resp, received_at, body, self._verify(path, headers, body))
            return
        generation = self._publisher.hub_generation
        fingerprint = NO_FINGERPRINT
        identity = None
        if not self._config.insecure_skip_verification:
            # A byte-for-byte repeat of a request verified before was answered by
            # `_RepeatShortcut`; its fingerprint is remembered with the body once acknowledged.
            identity = req.env.get(_REPEAT_IDENTITY) or _repeat_identity(req.env, cache, path, body)
            if identity is not None:
                fingerprint = identity[1]
        verified = self._verified(req.env, path, headers, body)
        # The identity's key is cache.key of the Client-Id header the verifier read: the same.
        key = identity[0] if identity is not None else cache.key(verified.client_id, body)
        if cache.contains(key, generation):
            self._answer_success(resp)
            _count_cache_hit(self._metrics, req.context.request_id, "a body")
            return
        self._publish(req, resp, received_at, body, verified)
        cache.add(key, fingerprint, generation)

    def _publish(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        received_at: float,
        body: bytes,
        verified: VerifiedRequest,
    ) -> None:
        """Parse, publish, answer SUCCESS once the hub says acknowledged (else it raises)."""
        notification = parse_notification(body)
        # For the log line of a failed publish too (the error handler reads it).
        req.context.summary = summary = safe_summary(notification)
        receipt = _receipt(received_at, verified, req.context.request_id)
        with self._metrics.publish_seconds.time():
            result = self._publisher.publish(notification, receipt)
        self._metrics.alipay_send_count.observe(result.alipay_send_count)
        self._answer_success(resp)
        if not logger.isEnabledFor(logging.DEBUG):
            return  # the hot path: counted above, the receipt is in the hub's store
        logger.debug(
            "request %s: %s paymentId=%s acknowledged%s (notification %s, Alipay send %d)",
            receipt.request_id,
            summary.get("notify_type", ""),
            summary.get("payment_id", ""),
            " earlier" if result.already_acknowledged else "",
            result.notification_id,
            result.alipay_send_count,
            extra={"request_id": receipt.request_id, "notification": summary},
        )

    def _answer_success(self, resp: falcon.Response) -> None:
        resp.status = falcon.HTTP_200
        resp.content_type = JSON_TYPE
        resp.data = SUCCESS_BODY
        self._metrics.count_success()

    def _verified(
        self, env: Mapping[str, Any], path: str, headers: Mapping[str, str], body: bytes
    ) -> VerifiedRequest:
        """What `_RepeatShortcut` found verifying this request, else the verifier's answer."""
        outcome = env.get(_VERIFICATION)
        if isinstance(outcome, VerifiedRequest):
            return outcome
        if isinstance(outcome, Exception):
            try:
                raise outcome
            finally:
                del outcome  # this frame, in the traceback, must not hold the exception
        return self._verify(path, headers, body)

    def _verify(self, path: str, headers: Mapping[str, str], body: bytes) -> VerifiedRequest:
        if self._config.insecure_skip_verification:
            self._metrics.insecure_requests.inc()
        return self._verifier.verify("POST", path, headers, body)


def _signed_headers(env: Mapping[str, Any]) -> dict[str, str]:
    """The headers the verifier reads, those of them present, from the WSGI environ."""
    return {name: env[key] for name, key in _SIGNED_HEADERS if key in env}


def read_body(req: falcon.Request, limit: int) -> bytes:
    """The raw body, checked for media type, size and emptiness; never reads more than limit+1."""
    check_content_type(req.content_type)
    declared = req.content_length
    if declared is not None and declared > limit:
        raise BodyTooLarge(f"the body has {declared} bytes; the bridge accepts at most {limit}")
    body = req.bounded_stream.read(limit + 1)
    if len(body) > limit:
        raise BodyTooLarge(f"the body is larger than the {limit} bytes the bridge accepts")
    if not body.strip():
        raise MalformedBody("the body is empty: expected Alipay's notification JSON")
    return body


def check_content_type(value: str | None) -> None:
    """application/json, optionally with charset=UTF-8 (Alipay sends UTF-8 JSON)."""
    if value in _ACCEPTED_CONTENT_TYPES:
        return  # the same header text passed before (Alipay always sends the same one)
    if not value:
        raise UnsupportedMediaType("the Content-Type header is missing: expected application/json")
    media_type, params = falcon.parse_header(value)
    if media_type.lower() != JSON_TYPE:
        raise UnsupportedMediaType(f"Content-Type {media_type[:64]!r} is not application/json")
    charset = params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(f"charset {charset[:32]!r} is not supported: send UTF-8")
    if len(_ACCEPTED_CONTENT_TYPES) < _MAX_ACCEPTED_CONTENT_TYPES:
        _ACCEPTED_CONTENT_TYPES.add(value)


def _receipt(received_at: float, verified: VerifiedRequest, request_id: str) -> hub_pb2.Receipt:
    timestamp = Timestamp()
    timestamp.FromNanoseconds(int(received_at * 1e9))
    return hub_pb2.Receipt(
        received_at=timestamp,
        client_id=verified.client_id,
        request_time=verified.request_time,
        request_id=request_id,
    )


class _ErrorReplies:
    """The one place an exception becomes an HTTP reply (see `replies.py` for the table)."""

    def __init__(self, metrics: BridgeMetrics) -> None:
        self._metrics = metrics

    def bridge_error(
        self, req: falcon.Request, resp: falcon.Response, ex: BridgeError, params: dict[str, Any]
    ) -> None:
        outcome = outcome_of(ex)
        self._metrics.count(outcome)
        if isinstance(ex, SignatureRejected):
            self._metrics.count_signature_failure(_snake(type(ex).__name__))
        resp.status = ex.status
        resp.content_type = JSON_TYPE
        resp.data = error_body(ex)
        request_id = _request_id(req)
        summary: dict[str, str] = getattr(req.context, "summary", {})
        logger.warning(
            "request %s: %d %s%s: %s",
            request_id,
            ex.status,
            outcome,
            f" paymentId={summary['payment_id']}" if summary.get("payment_id") else "",
            ex.reason,
            extra={"request_id": request_id, "outcome": outcome, "notification": summary},
        )

    def unexpected(
        self, req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict[str, Any]
    ) -> None:
        self._metrics.count(outcome_of(ex))
        resp.status = UNEXPECTED_STATUS
        resp.content_type = JSON_TYPE
        resp.data = UNEXPECTED_BODY
        request_id = _request_id(req)
        # The type and the frames only: an exception's text may quote the body it choked on.
        logger.error(
            "request %s: unexpected %s, answered 503 so Alipay retries\n%s",
            request_id,
            type(ex).__name__,
            "".join(traceback.format_tb(ex.__traceback__)).rstrip(),
            extra={"request_id": request_id, "outcome": "error"},
        )


def _request_id(req: falcon.Request) -> str:
    return str(getattr(req.context, "request_id", "-"))


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class _HealthResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "ok\n"


class _ReadyResource:
    def __init__(self, publisher: NotificationPublisher) -> None:
        self._publisher = publisher

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_TEXT
        if self._publisher.ready():
            resp.text = "ready\n"
        else:
            resp.status = falcon.HTTP_503
            resp.text = "no hub answers\n"


class _MetricsResource:
    def __init__(self, metrics: BridgeMetrics) -> None:
        self._metrics = metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = METRICS_CONTENT_TYPE
        resp.data = self._metrics.exposition()
