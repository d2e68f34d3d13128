"""How the operator's commands reach the hub: `--hub`, TLS and the admin token, and a channel.

::

    add_connection_arguments(parser)                 # --hub --tls --tls-ca --tls-cert --tls-key
                                                     # --tls-server-name --token-file
    connection = Connection.from_args(args)          # ConnectionError_: a bad file or flag
    with connection.channel(args.hub) as channel:    # TLS when --tls-ca; the token on every call
        stub = admin_pb2_grpc.HubAdminStub(channel)

TLS is on with `--tls-ca FILE` (that CA verifies the hub) or `--tls` (the system's CAs). The admin
token comes from `--token-file FILE` (alias `--admin-token-file`; in the environment
PAYNOTIFY_ADMIN_TOKEN_FILE) or, as a value, from PAYNOTIFY_ADMIN_TOKEN or PAYNOTIFY_TOKEN. It is
attached to every call by a client interceptor, so the commands' calls stay
`stub.Method(request, timeout=...)`; it works over TLS and over plaintext on loopback.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import grpc

from paynotify_client.credentials import (
    CredentialsError,
    bearer_metadata,
    read_token_file,
    tls_credentials,
    warn_plaintext_token,
)

__all__ = [
    "DEFAULT_HUB",
    "ENV_TOKENS",
    "Connection",
    "ConnectionError_",
    "add_connection_arguments",
]

DEFAULT_HUB = "127.0.0.1:50051"
# Token values in the environment, first found wins (a file is preferred).
ENV_TOKENS = ("PAYNOTIFY_ADMIN_TOKEN", "PAYNOTIFY_TOKEN")


class ConnectionError_(ValueError):
    """A TLS or token flag cannot be used; the message names the flag and file, never a secret.
    (Trailing underscore: not the builtin ConnectionError, an OSError about sockets.)"""


def add_connection_arguments(
    parser: argparse.ArgumentParser, *, default_hub: str = DEFAULT_HUB
) -> None:
    """--hub, --tls, --tls-ca, --tls-cert, --tls-key, --tls-server-name and --token-file."""
    add = parser.add_argument
    add("--hub", default=default_hub, metavar="ADDR", help=f"the hub (default {default_hub})")
    add("--tls", action="store_true", help="connect over TLS, trusting the system's CAs")
    add("--tls-ca", default=None, metavar="FILE", help="connect over TLS; the hub's CA (PEM)")
    add("--tls-cert", default=None, metavar="FILE", help="mutual TLS: client certificate (PEM)")
    add("--tls-key", default=None, metavar="FILE", help="mutual TLS: client private key (PEM)")
    add(
        "--tls-server-name",
        default=None,
        metavar="NAME",
        help="the name in the hub's certificate, when it is not the --hub host",
    )
    add(
        "--token-file",
        "--admin-token-file",
        dest="token_file",
        default=None,
        metavar="FILE",
        help="the admin token (or the token itself in PAYNOTIFY_ADMIN_TOKEN)",
    )


@dataclass(frozen=True)
class Connection:
    """TLS settings and token for reaching hubs; `channel(address)` opens one."""

    credentials: grpc.ChannelCredentials | None = None
    server_name: str | None = None
    token: str | None = field(default=None, repr=False)

    @classmethod
    def from_args(
        cls, args: argparse.Namespace, environ: Mapping[str, str] | None = None
    ) -> Connection:
        """From the flags of `add_connection_arguments`; raises ConnectionError_."""
        environ = os.environ if environ is None else environ
        tls = bool(args.tls or args.tls_ca)
        if not tls and (args.tls_cert or args.tls_key or args.tls_server_name):
            raise ConnectionError_(
                "--tls-cert, --tls-key and --tls-server-name need --tls-ca (or --tls)"
            )
        try:
            credentials = tls_credentials(args.tls_ca, args.tls_cert, args.tls_key) if tls else None
            token = read_token_file(args.token_file) if args.token_file else None
        except CredentialsError as exc:
            raise ConnectionError_(str(exc)) from None
        token = token or next((environ[n] for n in ENV_TOKENS if environ.get(n)), None)
        return cls(credentials, args.tls_server_name, token)

    def channel(self, address: str) -> grpc.Channel:
        """A channel to `address` (close it, or use it as a context manager) whose calls all
        carry the token."""
        warn_plaintext_token(address, self.credentials is not None, self.token)
        options = [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []
        if self.credentials is not None:
            channel = grpc.secure_channel(address, self.credentials, options)
        else:
            channel = grpc.insecure_channel(address, options)
        if not self.token:
            return channel
        return grpc.intercept_channel(channel, _BearerToken(bearer_metadata(self.token)))


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _BearerToken(grpc.UnaryUnaryClientInterceptor):
    """Adds `authorization: Bearer <token>` to each unary call (the admin RPCs are unary)."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def __repr__(self) -> str:
        return "_BearerToken(***)"

    def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        d = client_call_details
        details = _CallDetails(
            d.method,
            d.timeout,
            (*(d.metadata or ()), *self._metadata),
            d.credentials,
            d.wait_for_ready,
            d.compression,
        )
        return continuation(details, request)
