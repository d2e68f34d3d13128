"""`paynotify bridge`: serve the Falcon app on waitress until SIGTERM/SIGINT.

Prints one machine-readable line once it accepts connections (the real port when --listen asks for
port 0):

    paynotify-bridge listening on http://HOST:PORT

Stopping drains: the listening socket closes at once, requests in progress get up to
publish-timeout + DRAIN_GRACE seconds to finish, then the process exits 0.

To a hub with TLS and tokens (docs/security.md): `--hub-tls-ca ca.pem [--hub-tls-cert bridge.pem
--hub-tls-key bridge.key] --hub-token-file publisher.token` (or the token in PAYNOTIFY_HUB_TOKEN).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import rsa
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser, ParsingError
from waitress.server import BaseWSGIServer, create_server

from paynotify_bridge import config as defaults
from paynotify_bridge.app import RequestVerifier, UnverifiedRequests, create_app
from paynotify_bridge.config import BridgeConfig, ConfigError, parse_hubs, parse_key_source
from paynotify_bridge.publisher import HubPublisher
from paynotify_bridge.signature import KeyLoadError, Verifier, load_public_key
from paynotify_client.credentials import (
    CredentialsError,
    read_token_file,
    tls_credentials,
    warn_plaintext_token,
)

__all__ = [
    "LISTENING_PREFIX",
    "BridgeServer",
    "add_arguments",
    "build_publisher",
    "build_verifier",
    "config_from_args",
    "run",
]

logger = logging.getLogger(__name__)

LISTENING_PREFIX: Final = "paynotify-bridge listening on"
# Measured: waitress's throughput at 64 connections recovers with a short GIL switch interval.
SWITCH_INTERVAL: Final = 0.0005
# How often the serving loop looks at the stop flag (a stop also wakes it at once).
LOOP_TIMEOUT: Final = 0.5
DRAIN_GRACE: Final = 2.0
EXIT_CONFIG: Final = 2
EXIT_STARTUP: Final = 1
# The publisher token as a value in the environment (--hub-token-file is preferred).
ENV_HUB_TOKEN: Final = "PAYNOTIFY_HUB_TOKEN"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(
        "--listen", default=defaults.DEFAULT_LISTEN, help="HOST:PORT to serve on (port 0: any free)"
    )
    add(
        "--hub",
        action="append",
        metavar="ADDR[,ADDR...]",
        help=f"hub address(es), repeatable (default {defaults.DEFAULT_HUB})",
    )
    add("--path", default=defaults.DEFAULT_PATH, help="the notify path Alipay POSTs to")
    add(
        "--alipay-public-key",
        action="append",
        metavar="[VERSION=]FILE",
        help="Alipay's public key (PEM or base64 DER) for keyVersion VERSION (any version when "
        "omitted); repeatable, for key rotation",
    )
    add(
        "--client-id",
        action="append",
        metavar="ID",
        help="a Client-Id Alipay sends for you; repeatable",
    )
    add(
        "--publish-timeout",
        type=float,
        default=defaults.DEFAULT_PUBLISH_TIMEOUT,
        metavar="SECONDS",
        help="how long a request waits for the acks before answering 503 (Alipay retries)",
    )
    add(
        "--max-body-bytes",
        type=int,
        default=defaults.DEFAULT_MAX_BODY_BYTES,
        help="larger bodies are answered 413",
    )
    add(
        "--threads",
        type=int,
        default=defaults.DEFAULT_THREADS,
        help="waitress worker threads (each waiting request holds one)",
    )
    add(
        "--connection-limit",
        type=int,
        default=defaults.DEFAULT_CONNECTION_LIMIT,
        help="simultaneous connections accepted",
    )
    add(
        "--channel-timeout",
        type=int,
        default=defaults.DEFAULT_CHANNEL_TIMEOUT,
        metavar="SECONDS",
        help="idle connections are closed after this long",
    )
    add(
        "--ack-cache-size",
        type=int,
        default=defaults.DEFAULT_ACK_CACHE_SIZE,
        metavar="ENTRIES",
        help="bodies answered SUCCESS that are remembered, so that Alipay's retries of them are "
        f"answered without the hub (default {defaults.DEFAULT_ACK_CACHE_SIZE:,}, 64 bytes "
        "each; 0: off); forgotten when a hub restarts",
    )
    add(
        "--ack-cache-ttl",
        type=float,
        default=defaults.DEFAULT_ACK_CACHE_TTL,
        metavar="SECONDS",
        help="how long such a body is remembered: between this and twice this, less when "
        f"--ack-cache-size/2 answers come sooner (default {defaults.DEFAULT_ACK_CACHE_TTL:g}, "
        "at least 120)",
    )
    add(
        "--insecure-skip-signature-check",
        action="store_true",
        help="LOCAL DEVELOPMENT ONLY: accept unsigned requests (loopback --listen only)",
    )
    _add_hub_security_arguments(parser)


def _add_hub_security_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--hub-tls", action="store_true", help="connect to the hub over TLS (the system's CAs)")
    add("--hub-tls-ca", type=Path, metavar="FILE", help="connect to the hub over TLS: its CA (PEM)")
    add("--hub-tls-cert", type=Path, metavar="FILE", help="mutual TLS: the bridge's certificate")
    add("--hub-tls-key", type=Path, metavar="FILE", help="mutual TLS: the bridge's private key")
    add(
        "--hub-tls-server-name",
        metavar="NAME",
        help="the name in the hub's certificate, when it is not the --hub host",
    )
    add(
        "--hub-token-file",
        type=Path,
        metavar="FILE",
        help=f"the publisher token for the hub (or the token itself in {ENV_HUB_TOKEN})",
    )


def config_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> BridgeConfig:
    """The `BridgeConfig` of parsed flags (the hub token also from `environ`, default
    os.environ); raises `ConfigError` with the flag at fault."""
    return BridgeConfig(
        listen=args.listen,
        path=args.path,
        hubs=parse_hubs(args.hub or [defaults.DEFAULT_HUB]),
        public_keys=tuple(parse_key_source(value) for value in args.alipay_public_key or ()),
        client_ids=tuple(dict.fromkeys(c.strip() for c in args.client_id or () if c.strip())),
        publish_timeout=args.publish_timeout,
        max_body_bytes=args.max_body_bytes,
        threads=args.threads,
        connection_limit=args.connection_limit,
        channel_timeout=args.channel_timeout,
        ack_cache_size=args.ack_cache_size,
        ack_cache_ttl=args.ack_cache_ttl,
        insecure_skip_verification=args.insecure_skip_signature_check,
        hub_tls=args.hub_tls,
        hub_tls_ca=args.hub_tls_ca,
        hub_tls_cert=args.hub_tls_cert,
        hub_tls_key=args.hub_tls_key,
        hub_tls_server_name=args.hub_tls_server_name or None,
        hub_token=_hub_token(args.hub_token_file, os.environ if environ is None else environ),
    )


def _hub_token(path: Path | None, environ: Mapping[str, str]) -> str | None:
    if path is None:
        return environ.get(ENV_HUB_TOKEN) or None
    try:
        return read_token_file(path)
    except CredentialsError as exc:
        raise ConfigError(f"--hub-token-file: {exc}") from None


def build_publisher(config: BridgeConfig) -> HubPublisher:
    """The hub publisher of `config`: TLS and token as configured."""
    credentials = None
    if config.hub_uses_tls:
        try:
            credentials = tls_credentials(
                config.hub_tls_ca, config.hub_tls_cert, config.hub_tls_key
            )
        except CredentialsError as exc:
            raise ConfigError(f"--hub-tls-*: {exc}") from None
    warn_plaintext_token(",".join(config.hubs), credentials is not None, config.hub_token)
    return HubPublisher(
        config.hubs,
        config.publish_timeout,
        credentials=credentials,
        server_name=config.hub_tls_server_name,
        token=config.hub_token,
    )


def build_verifier(config: BridgeConfig) -> RequestVerifier:
    """The signature verifier with every configured key loaded, or the insecure stand-in."""
    if config.insecure_skip_verification:
        logger.warning(
            "!!! SIGNATURE VERIFICATION IS OFF (--insecure-skip-signature-check): anyone who can "
            "reach %s can forge payment notifications. Local development only. !!!",
            config.listen,
        )
        return UnverifiedRequests()
    keys: dict[str | None, rsa.RSAPublicKey] = {}
    for source in config.public_keys:
        keys[source.version] = _load_key(source.path)
    return Verifier(keys, config.client_ids)


def _load_key(path: Path) -> rsa.RSAPublicKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"--alipay-public-key {path}: cannot read it ({exc.strerror})") from None
    try:
        return load_public_key(data)
    except KeyLoadError as exc:
        raise ConfigError(f"--alipay-public-key {path}: {exc}") from None


class _RequestParser(HTTPRequestParser):
    """waitress's parser, with every ValueError of a request head answered 400 Bad Request."""

    def parse_header(self, header_plus: bytes) -> None:
        try:
            super().parse_header(header_plus)
        except ValueError as exc:
            raise ParsingError(f"malformed request line or headers ({exc})") from None


class _Channel(HTTPChannel):
    parser_class = _RequestParser


class BridgeServer:
    """waitress serving the app, stoppable from any thread or a signal handler, draining on stop."""

    def __init__(self, app: Any, config: BridgeConfig) -> None:
        self._config = config
        self._stop = threading.Event()
        # Reentrant: a signal handler may run stop() on the main thread while it holds the lock.
        self._lock = threading.RLock()
        self._server: Any = create_server(
            app,
            host=config.host,
            port=config.port,
            threads=config.threads,
            connection_limit=config.connection_limit,
            channel_timeout=config.channel_timeout,
            # waitress looks for idle channels only every cleanup_interval (default 30 s): look
            # often enough that --channel-timeout bounds how long an idle connection lives.
            cleanup_interval=max(1, config.channel_timeout // 2),
            # Above our own limit, so the app (not waitress) answers 413 with an Alipay-shaped body.
            max_request_body_size=2 * config.max_body_bytes + 1,
            asyncore_use_poll=True,
            ident="paynotify",
        )
        # waitress answers a malformed request line 400, except when urlsplit raises ValueError
        # ("Invalid IPv6 URL" for http://[...): then it drops the connection unanswered.
        if isinstance(self._server, BaseWSGIServer):
            self._server.channel_class = _Channel

    @property
    def host(self) -> str:
        return str(self._server.effective_host)

    @property
    def port(self) -> int:
        return int(self._server.effective_port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def serve(self) -> None:
        """Serve until `stop()`; then drain requests in progress and close every connection."""
        server = self._server
        while not self._stop.is_set():
            server.asyncore.loop(timeout=LOOP_TIMEOUT, map=server._map, use_poll=True, count=1)
        self._drain()

    def stop(self) -> None:
        """Ask `serve()` to return; safe from other threads and signal handlers."""
        if self._stop.is_set():
            return
        with self._lock:
            self._stop.set()
            self._server.pull_trigger()  # wake the loop now rather than at its next timeout

    def _drain(self) -> None:
        server = self._server
        # The listening socket only: task threads still use the trigger to hand back replies.
        wasyncore.dispatcher.close(server)
        deadline = time.monotonic() + self._config.publish_timeout + DRAIN_GRACE
        while self._busy() and time.monotonic() < deadline:
            server.asyncore.loop(timeout=0.05, map=server._map, use_poll=True, count=1)
        with self._lock:
            server.trigger.close()
        wasyncore.close_all(server._map)
        server.task_dispatcher.shutdown(timeout=1)

    def _busy(self) -> bool:
        dispatcher = self._server.task_dispatcher
        if dispatcher.active_count or dispatcher.queue:
            return True
        return any(
            channel.requests or channel.total_outbufs_len
            for channel in list(self._server._map.values())
            if isinstance(channel, HTTPChannel)
        )


def run(args: argparse.Namespace) -> int:
    sys.setswitchinterval(SWITCH_INTERVAL)
    # waitress warns "Task queue depth" on every queued task: measured 17-25% of throughput.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    try:
        config = config_from_args(args)
        verifier = build_verifier(config)
        publisher = build_publisher(config)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"paynotify bridge: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return _serve(config, verifier, publisher)
    finally:
        publisher.close()


def _serve(config: BridgeConfig, verifier: RequestVerifier, publisher: HubPublisher) -> int:
    try:
        server = BridgeServer(create_app(config, verifier, publisher), config)
    except (OSError, ValueError) as exc:
        print(f"paynotify bridge: cannot listen on {config.listen}: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    _install_signal_handlers(server.stop)
    logger.info(
        "bridge serving POST %s, publishing to %s (%s, %s; timeout %ss, %d threads)",
        config.path,
        ",".join(config.hubs),
        _hub_transport(config),
        "with a publisher token" if config.hub_token else "no token",
        config.publish_timeout,
        config.threads,
    )
    print(f"{LISTENING_PREFIX} {server.url}", flush=True)
    server.serve()
    logger.info("bridge stopped")
    return 0


def _hub_transport(config: BridgeConfig) -> str:
    if not config.hub_uses_tls:
        return "plaintext"
    return "mutual TLS" if config.hub_tls_cert else "TLS"


def _install_signal_handlers(stop: Callable[[], None]) -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # embedded (e.g. in tests): the owner stops the server

    def handler(signum: int, frame: FrameType | None) -> None:
        logger.info("received %s, stopping", signal.Signals(signum).name)
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
