"""Who may call what on the hub: a grpc.aio server interceptor checking bearer tokens per role.

Every RPC except health checking and reflection passes `AuthInterceptor`:

    tokens configured (any at all)
        no `authorization: Bearer <token>`, or a token nobody configured -> UNAUTHENTICATED
        a valid token of another role                                   -> PERMISSION_DENIED
        Publish, PublishStream: publisher; HubAdmin/*: admin; Subscribe: subscriber:<group>, and
        the group the stream opens must be <group> (checked on the first request)
                                                                        -> else PERMISSION_DENIED
    no token configured (loopback development, tests): Publish and Subscribe are open; HubAdmin is
        open only when the hub listens on loopback, else PERMISSION_DENIED

Subscribe names its group only in its first request, after the interceptor has run: the
interceptor wraps Subscribe's handler so the wrapper reads that first request, compares its group
with the caller's principal, and hands the stream (first request included) to the servicer, which
never sees a stream it may not serve. Tokens are compared in constant time (see
`paynotify_hub.tokens`) and never logged; refusals are logged with the method, the peer and the
reason, and counted in `paynotify_hub_auth_refusals{method,code}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import grpc
from prometheus_client import CollectorRegistry, Counter

from paynotify_hub.config import HubConfig
from paynotify_hub.tokens import Principal, Role, TokenTable

__all__ = [
    "ADMIN_SERVICE",
    "OPEN_SERVICES",
    "PUBLISH_METHOD",
    "SUBSCRIBE_METHOD",
    "AuthInterceptor",
    "Refusal",
    "authorize",
    "bearer_token",
    "log_security",
]

logger = logging.getLogger(__name__)

PUBLISH_METHOD: Final = "/paynotify.v1.NotificationHub/Publish"
PUBLISH_STREAM_METHOD: Final = "/paynotify.v1.NotificationHub/PublishStream"
SUBSCRIBE_METHOD: Final = "/paynotify.v1.NotificationHub/Subscribe"
ADMIN_SERVICE: Final = "paynotify.v1.HubAdmin"
# Load balancers and tools must reach these without a token; they carry no payment data.
OPEN_SERVICES: Final = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)
# How long a refused streaming call may take to send its first request (see _first_request).
FIRST_REQUEST_WAIT: Final = 1.0
_ROLE_OF_METHOD: Final = {
    PUBLISH_METHOD: Role.PUBLISHER,
    PUBLISH_STREAM_METHOD: Role.PUBLISHER,
    SUBSCRIBE_METHOD: Role.SUBSCRIBER,
}

if TYPE_CHECKING:  # generic only in the type stubs
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
    Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    Context = grpc.aio.ServicerContext
Continuation: TypeAlias = Callable[[grpc.HandlerCallDetails], Awaitable["Handler | None"]]


class Refusal(Exception):
    """Why a call is refused: a status code and a message safe to show (no token in it)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def _service(method: str) -> str:
    return method.lstrip("/").partition("/")[0]


def bearer_token(metadata: Any) -> str:
    """The token of the `authorization: Bearer <token>` metadata; Refusal(UNAUTHENTICATED)."""
    values = [v for k, v in metadata or () if k.lower() == "authorization"]
    if not values:
        raise Refusal(
            grpc.StatusCode.UNAUTHENTICATED, "missing token: send authorization: Bearer <token>"
        )
    value = values[0].decode("ascii", "replace") if isinstance(values[0], bytes) else values[0]
    scheme, _, token = value.strip().partition(" ")
    if len(values) > 1 or scheme.lower() != "bearer" or not token.strip():
        raise Refusal(
            grpc.StatusCode.UNAUTHENTICATED,
            "malformed authorization metadata: send exactly one authorization: Bearer <token>",
        )
    return token.strip()


def authorize(method: str, principal: Principal) -> None:
    """Raise Refusal(PERMISSION_DENIED) unless `principal`'s role may call `method` (Subscribe's
    group is checked later, on the stream's first request)."""
    wanted = Role.ADMIN if _service(method) == ADMIN_SERVICE else _ROLE_OF_METHOD.get(method)
    if principal.role is not wanted:
        raise Refusal(
            grpc.StatusCode.PERMISSION_DENIED,
            f"token of role {principal.role} is not allowed to call {method}",
        )


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks every call but health and reflection against `tokens` (see the module docstring).

    `admin_open`: whether HubAdmin may be called without a token when no token is configured
    (true when the hub listens on loopback only).
    """

    def __init__(
        self,
        tokens: TokenTable,
        *,
        admin_open: bool,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._tokens = tokens
        self._admin_open = admin_open
        self._refusals = Counter(
            "paynotify_hub_auth_refusals",
            "Calls refused for a missing, invalid or insufficient credential",
            ["method", "code"],
            registry=registry,
        )

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        method = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None or _service(method) in OPEN_SERVICES:
            return handler  # unknown methods end UNIMPLEMENTED, as without the interceptor
        try:
            principal = self._principal(method, handler_call_details.invocation_metadata)
        except Refusal as refusal:
            return self._refusing(handler, method, refusal)
        if principal is not None and method == SUBSCRIBE_METHOD:
            return _group_gated(handler, principal, self._on_refusal)
        return handler

    def _principal(self, method: str, metadata: Any) -> Principal | None:
        """The caller's principal, None when no token is configured; Refusal when refused."""
        if not self._tokens.enabled:
            if _service(method) == ADMIN_SERVICE and not self._admin_open:
                raise Refusal(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "admin RPCs on a hub that listens beyond loopback need a token: "
                    "configure --admin-token-file",
                )
            return None
        principal = self._tokens.authenticate(bearer_token(metadata))
        if principal is None:
            raise Refusal(grpc.StatusCode.UNAUTHENTICATED, "invalid token")
        authorize(method, principal)
        return principal

    def _refusing(self, handler: Handler, method: str, refusal: Refusal) -> Handler:
        async def refuse(request: object, context: Context) -> None:
            if handler.request_streaming:
                await _first_request(request)
            self._on_refusal(method, refusal, context)
            await context.abort(refusal.code, refusal.details)

        return _with_behavior(handler, refuse)

    def _on_refusal(self, method: str, refusal: Refusal, context: Context) -> None:
        self._refusals.labels(method=method, code=refusal.code.name).inc()
        logger.warning(
            "refused %s from %s: %s %s",
            method,
            context.peer(),
            refusal.code.name,
            refusal.details,
            extra={"grpc_method": method, "grpc_code": refusal.code.name},
        )


OnRefusal = Callable[[str, Refusal, Context], None]


def _group_gated(handler: Handler, principal: Principal, on_refusal: OnRefusal) -> Handler:
    """Subscribe's handler, refusing a stream whose open names a group `principal` may not read."""
    behavior: Any = handler.stream_stream
    if behavior is None or not inspect.isasyncgenfunction(behavior):
        raise TypeError("Subscribe must be served by an async generator")

    async def gated(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
        requests = aiter(requests)
        first = await anext(requests, None)
        # Bytes that did not parse arrive as service.Undecodable: the servicer refuses those.
        if first is not None and hasattr(first, "HasField") and first.HasField("open"):
            group = first.open.group
            if not principal.may_subscribe(group):
                refusal = Refusal(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"token not allowed for group {group[:64]!r}",
                )
                on_refusal(SUBSCRIBE_METHOD, refusal, context)
                await context.abort(refusal.code, refusal.details)
        async with contextlib.aclosing(behavior(_prepend(first, requests), context)) as responses:
            async for response in responses:
                yield response

    return _with_behavior(handler, gated)


async def _first_request(requests: Any) -> None:
    """Wait (bounded) for a streaming call's first request before refusing it: a grpc.aio client
    whose first write is still in flight when the status arrives reports INTERNAL instead of
    our status (grpc/grpc#36066); once we have read it, that write has completed."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(anext(aiter(requests), None), FIRST_REQUEST_WAIT)


async def _prepend(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    if first is None:
        return
    yield first
    async for request in rest:
        yield request


def _with_behavior(handler: Handler, behavior: Callable[..., Any]) -> Handler:
    """`handler` with its behavior replaced, keeping its arity and (de)serializers: the server
    dispatches on the arity, so a refusal must have the same one as the method it refuses."""
    make: Callable[..., Handler]
    if handler.request_streaming and handler.response_streaming:
        make = grpc.stream_stream_rpc_method_handler
    elif handler.request_streaming:
        make = grpc.stream_unary_rpc_method_handler
    elif handler.response_streaming:
        make = grpc.unary_stream_rpc_method_handler
    else:
        make = grpc.unary_unary_rpc_method_handler
    return make(
        behavior,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def log_security(config: HubConfig) -> None:
    """Say at start how this hub is protected; loudly when it is not."""
    tls = config.tls
    if tls is not None:
        mode = "mutual TLS (client certificates required)" if tls.mutual else "TLS"
        logger.info("gRPC over %s on %s", mode, config.listen)
    elif not config.listens_on_loopback:
        logger.warning(
            "!!! PLAINTEXT gRPC on %s (--insecure-plaintext): tokens and payment data cross the "
            "network unencrypted. Use --tls-cert/--tls-key. !!!",
            config.listen,
        )
    tokens = config.tokens
    if not tokens.enabled:
        logger.warning(
            "no token configured: every RPC is open to anyone who can connect%s "
            "(configure --publisher-token-file, --subscriber-token-file, --admin-token-file)",
            "" if config.listens_on_loopback else " (admin RPCs refused beyond loopback)",
        )
        return
    logger.info("tokens configured for %s", tokens.describe())
    _warn_missing_roles(config)


def _warn_missing_roles(config: HubConfig) -> None:
    principals = config.tokens.principals()
    if Principal(Role.PUBLISHER) not in principals:
        logger.warning("no publisher token configured: no bridge can Publish")
    if Principal(Role.ADMIN) not in principals:
        logger.warning("no admin token configured: the admin RPCs are refused")
    for group in config.groups:
        if Principal(Role.SUBSCRIBER, group.name) not in principals:
            logger.warning(
                "no subscriber token configured for %s group %s: nobody can subscribe to it",
                "required" if group.required else "best-effort",
                group.name,
            )
