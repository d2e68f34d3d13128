"""The real processes: `paynotify hub`, one acking subscriber per group, `paynotify bridge`.

Each `Pipeline` gets a fresh store (a new SQLite file, or a new PostgreSQL schema dropped at the
end), so record indexes can restart at 0 for every pipeline without repeating an identity the store
has already seen.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench.bodies import NOTIFY_PATH, Corpus, read_record
from bench.procs import Proc, ProcessGroup, StartError, http_status, wait_for

__all__ = ["Cursor", "Pipeline", "PipelineOptions", "bare_server", "postgres_schema"]

PAYNOTIFY = str(Path(sys.executable).with_name("paynotify"))
HUB_LISTENING = re.compile(r"paynotify-hub listening on (\S+:\d+)")
BRIDGE_LISTENING = re.compile(r"paynotify-bridge listening on (http://\S+:\d+)")
BARE_LISTENING = re.compile(r"bare app on (\S+:\d+)")
START_TIMEOUT_S = 30.0
FIRST_SUCCESS_TIMEOUT_S = 60.0


@dataclass
class Cursor:
    """The next unused record of the corpus for the current store."""

    size: int
    position: int = 0

    def take(self, count: int) -> int:
        start = self.position
        self.position = min(self.size, self.position + count)
        return start

    @property
    def remaining(self) -> int:
        return self.size - self.position


@dataclass(frozen=True)
class PipelineOptions:
    log_level: str = "INFO"
    sub_max_in_flight: int = 256
    sub_callback_threads: int = 4
    hub_args: tuple[str, ...] = ()
    bridge_args: tuple[str, ...] = ()
    # What runs `paynotify hub ...` (bench.profile can swap in bench.hubwrap).
    hub_command: tuple[str, ...] = (PAYNOTIFY,)


@dataclass
class Pipeline:
    """hub + subscribers + bridge for one store and one number of groups."""

    label: str
    store_url: str
    groups: int
    corpus: Corpus
    procs: ProcessGroup
    options: PipelineOptions
    cursor: Cursor = field(init=False)
    url: str = ""
    hub_address: str = ""
    hub: Proc | None = None
    bridge: Proc | None = None
    subscribers: list[Proc] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cursor = Cursor(self.corpus.count)

    @property
    def group_names(self) -> list[str]:
        return ["bench"] if self.groups == 1 else [f"bench-{i:02d}" for i in range(self.groups)]

    def start(self) -> None:
        hub_address = self._start_hub()
        for name in self.group_names:
            self.subscribers.append(self._start_subscriber(hub_address, name))
        self.url = self._start_bridge()
        self._first_success()

    def stop(self) -> None:
        for proc in [self.bridge, *self.subscribers, self.hub]:
            if proc is not None:
                self.procs.stop(proc)
        self.subscribers.clear()
        self.hub = self.bridge = None

    def members(self) -> list[Proc]:
        return [p for p in [self.bridge, self.hub, *self.subscribers] if p is not None]

    def _start_hub(self) -> str:
        cmd = [*self.options.hub_command, "--log-level", self.options.log_level, "hub"]
        cmd += ["--listen", "127.0.0.1:0"]
        cmd += ["--store", self.store_url]
        for name in self.group_names:
            cmd += ["--group", f"{name}:required"]
        cmd += self.options.hub_args
        self.hub = self.procs.start(f"hub-{self.label}", cmd, role="hub")
        self.hub_address = _wait_for_line(self.hub, HUB_LISTENING, self.procs)
        return self.hub_address

    def _start_subscriber(self, hub_address: str, group: str) -> Proc:
        cmd = [sys.executable, "-m", "bench.subscriber", "--hub", hub_address, "--group", group]
        cmd += ["--max-in-flight", str(self.options.sub_max_in_flight)]
        cmd += ["--callback-threads", str(self.options.sub_callback_threads)]
        return self.procs.start(f"subscriber-{self.label}-{group}", cmd, role="subscriber")

    def _start_bridge(self) -> str:
        self.bridge, url = self.start_bridge_process(f"bridge-{self.label}", ())
        return url + self.corpus.notify_path

    def start_bridge_process(self, name: str, extra_args: tuple[str, ...]) -> tuple[Proc, str]:
        """A bridge on this pipeline's hub (`extra_args` after the usual ones): (proc, base url).
        The caller stops one it started itself (`procs.stop`)."""
        cmd = [
            PAYNOTIFY,
            "--log-level",
            self.options.log_level,
            "bridge",
            "--listen",
            "127.0.0.1:0",
        ]
        cmd += ["--hub", self.hub_address, "--path", self.corpus.notify_path]
        cmd += ["--alipay-public-key", str(self.corpus.public_key_pem.resolve())]
        cmd += ["--client-id", self.corpus.client_id, *self.options.bridge_args, *extra_args]
        proc = self.procs.start(name, cmd, role="bridge")
        url = _wait_for_line(proc, BRIDGE_LISTENING, self.procs)
        port = int(url.rsplit(":", 1)[1])
        wait_for(
            "bridge /readyz",
            lambda: http_status(port, "/readyz") == 200,
            START_TIMEOUT_S,
            self.procs,
        )
        return proc, url

    def _first_success(self) -> None:
        """Send fresh records one by one until one is answered SUCCESS: every group is connected."""
        deadline = time.monotonic() + FIRST_SUCCESS_TIMEOUT_S
        last = ""
        while time.monotonic() < deadline:
            self.procs.check_alive()
            status, body = post_raw(self.url, read_record(self.corpus, self.cursor.take(1)))
            if status == 200 and b'"resultStatus":"S"' in body:
                return
            last = f"HTTP {status} {body[:200]!r}"
            time.sleep(0.2)
        raise StartError(
            f"pipeline {self.label}: no SUCCESS within {FIRST_SUCCESS_TIMEOUT_S:.0f} s ({last})"
        )


def post_raw(url: str, raw_request: bytes, timeout_s: float = 15.0) -> tuple[int, bytes]:
    """Send one precomputed request to `url`'s host and port: (status, body), or (0, error)."""
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    head, _, body = raw_request.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = dict(
        line.split(": ", 1) for line in lines[1:] if not line.lower().startswith("host:")
    )
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout_s)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    except OSError as exc:
        return 0, str(exc).encode()
    finally:
        conn.close()


def _wait_for_line(proc: Proc, pattern: re.Pattern[str], procs: ProcessGroup) -> str:
    found: list[str] = []

    def check() -> bool:
        match = pattern.search(proc.log.read_text(errors="replace"))
        if match:
            found.append(match.group(1))
        return bool(match)

    wait_for(f"{proc.name} listening line", check, START_TIMEOUT_S, procs)
    return found[0]


def bare_server(procs: ProcessGroup) -> tuple[Proc, str, dict[str, Any]]:
    """Start bench.bare_app on a free port; (process, notify URL, its server settings)."""
    cmd = [sys.executable, "-m", "bench.bare_app", "--listen", "127.0.0.1:0"]
    proc = procs.start("bare", cmd, role="bare")
    address = _wait_for_line(proc, BARE_LISTENING, procs)
    line = next(x for x in proc.log.read_text().splitlines() if x.startswith("bare app on"))
    settings: dict[str, Any] = json.loads(line.split(" ", 4)[4])
    return proc, f"http://{address}{NOTIFY_PATH}", settings


@contextlib.contextmanager
def postgres_schema(dsn: str, name: str) -> Iterator[str]:
    """A fresh schema for one run (dropped after); yields the hub's store URL that selects it."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        sep = "&" if "?" in dsn else "?"
        yield f"{dsn}{sep}options={quote(f'-csearch_path={name}')}"
    finally:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
