"""The bare limit: a Falcon app on waitress that reads the body and answers Alipay's SUCCESS JSON.

It runs on the bridge's own server wrapper (`paynotify_bridge.cli.BridgeServer` with the bridge's
default `BridgeConfig`: threads, connection limit, channel timeout, poll loop) with the bridge's GIL
switch interval and the waitress.queue logger silenced, so the ratio pipeline/bare measures the
pipeline, not a difference in server setup. Without the bridge installed it falls back to plain
waitress with copies of those settings.

    python -m bench.bare_app --listen 127.0.0.1:0     (prints "bare app on HOST:PORT ...")
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any, cast

import falcon
from waitress.server import create_server

from bench.bodies import NOTIFY_PATH

__all__ = ["create_app", "main"]

SUCCESS_BODY = b'{"result":{"resultCode":"SUCCESS","resultStatus":"S","resultMessage":"success"}}'
# Copies of the bridge's settings, used only when the bridge cannot be imported.
FALLBACK = {
    "threads": 32,
    "connection_limit": 512,
    "channel_timeout": 30,
    "switch_interval": 0.0005,
}


class Notify:
    """Reads the whole body (as the bridge does) and answers SUCCESS."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.bounded_stream.read()
        resp.content_type = falcon.MEDIA_JSON
        resp.data = SUCCESS_BODY


def create_app() -> falcon.App[falcon.Request, falcon.Response]:
    app = falcon.App()
    app.add_route(NOTIFY_PATH, Notify())
    return app


class _PlainServer:
    def __init__(self, app: Any, host: str, port: int) -> None:
        self._server: Any = cast(
            Any,
            create_server(
                app,
                host=host,
                port=port,
                threads=FALLBACK["threads"],
                connection_limit=FALLBACK["connection_limit"],
                channel_timeout=FALLBACK["channel_timeout"],
                asyncore_use_poll=True,
            ),
        )
        self.host = str(self._server.effective_host)
        self.port = int(self._server.effective_port)

    def serve(self) -> None:
        self._server.run()

    def stop(self) -> None:
        raise SystemExit(0)


def build_server(app: Any, listen: str) -> tuple[Any, dict[str, Any]]:
    """(server with .serve/.stop/.host/.port, the settings in force)."""
    try:
        from paynotify_bridge.cli import SWITCH_INTERVAL, BridgeServer
        from paynotify_bridge.config import BridgeConfig
    except ImportError:
        host, _, port = listen.rpartition(":")
        settings = dict(FALLBACK, source="bench fallback (paynotify_bridge not importable)")
        return _PlainServer(app, host, int(port)), settings
    config = BridgeConfig(listen=listen, insecure_skip_verification=True)
    settings = {
        "threads": config.threads,
        "connection_limit": config.connection_limit,
        "channel_timeout": config.channel_timeout,
        "switch_interval": SWITCH_INTERVAL,
        "source": "paynotify_bridge.cli.BridgeServer with default BridgeConfig",
    }
    return BridgeServer(app, config), settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    # waitress warns per task when its queue is deep; left on, that costs 17-25% under load.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    server, settings = build_server(create_app(), args.listen)
    sys.setswitchinterval(float(settings["switch_interval"]))
    _on_signals(server.stop)
    print(f"bare app on {server.host}:{server.port} {json.dumps(settings)}", flush=True)
    server.serve()
    return 0


def _on_signals(stop: Callable[[], None]) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


if __name__ == "__main__":
    sys.exit(main())
