"""nginx on loopback running the shipped `deploy/nginx/paynotify.conf`.

The shipped site is rendered for the test, not rewritten: its upstream servers point at the test's
bridges (their max_fails/fail_timeout kept), `listen 443 ssl` becomes a loopback port, and the TLS
and server_name lines go. Every other line, every proxy_* setting included, is used as shipped.

    with running_nginx(tmp_path, ["127.0.0.1:8081", "127.0.0.1:8082"]) as nginx:
        nginx.url("/alipay/notify")
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.hubkit import free_port

__all__ = [
    "SHIPPED_SITE",
    "NginxProcess",
    "directives",
    "find_nginx_or_skip",
    "render_site",
    "running_nginx",
]

SHIPPED_SITE = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "paynotify.conf"
ENV_REQUIRE = "PAYNOTIFY_REQUIRE_NGINX"
START_TIMEOUT = 15.0
# Lines of the shipped site that only make sense on the real host.
_DROPPED = re.compile(r"^\s*(server_name|ssl_\w+)\s")
_LISTEN = re.compile(r"^(\s*)listen\s+[^;]*;(.*)$")
_UPSTREAM_SERVER = re.compile(r"^(\s*)server\s+(\S+)([^;]*);(.*)$")


def find_nginx_or_skip() -> str:
    """The nginx binary, or a skip saying why (a failure with PAYNOTIFY_REQUIRE_NGINX=1)."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None
    )
    if found:
        return found
    reason = "nginx is not installed (apt-get install nginx-light, or nginx)"
    if os.environ.get(ENV_REQUIRE) == "1":
        pytest.fail(f"nginx is mandatory here ({ENV_REQUIRE}=1) but {reason}")
    pytest.skip(reason)


def render_site(text: str, upstreams: Sequence[str], listen: str) -> str:
    """The shipped site with the test's bridges and port, without TLS; nothing else changed."""
    out: list[str] = []
    in_upstream = False
    servers = list(upstreams)
    replaced = 0
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("upstream "):
            in_upstream = True
        elif in_upstream and stripped.startswith("}"):
            in_upstream = False
        if _DROPPED.match(line):
            continue
        if in_upstream and (m := _UPSTREAM_SERVER.match(line)):
            if replaced >= len(servers):
                raise ValueError(f"the shipped upstream names more servers than {servers}")
            line = f"{m.group(1)}server {servers[replaced]}{m.group(3)};{m.group(4)}"
            replaced += 1
        elif m := _LISTEN.match(line):
            line = f"{m.group(1)}listen {listen};{m.group(2)}"
        out.append(line)
    if replaced != len(servers):
        raise ValueError(f"the shipped upstream names {replaced} servers, the test has {servers}")
    return "\n".join(out) + "\n"


def directives(text: str, prefix: str) -> list[str]:
    """Every `prefix...` directive of a config, normalised (comments and spacing dropped)."""
    found = []
    for line in text.splitlines():
        code = line.split("#", 1)[0].strip()
        if code.startswith(prefix):
            found.append(" ".join(code.split()))
    return found


def main_config(prefix: Path, site: Path) -> str:
    """A whole nginx.conf of its own in `prefix`: pid, logs and temp files, the site included."""
    temp = {
        name: prefix / "temp" / name
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    }
    for path in temp.values():
        path.mkdir(parents=True, exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (
        f"{user}worker_processes 1;\n"
        f"pid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'error.log'} info;\n"
        "events { worker_connections 512; }\n"
        "http {\n"
        # Which bridges nginx tried for each request (the shipped site keeps the default format).
        "    log_format upstreams '$status $request_time upstream=$upstream_addr "
        "statuses=$upstream_status';\n"
        f"    access_log {prefix / 'access.log'} upstreams;\n"
        f"    client_body_temp_path {temp['client_body']};\n"
        f"    proxy_temp_path {temp['proxy']};\n"
        f"    fastcgi_temp_path {temp['fastcgi']};\n"
        f"    uwsgi_temp_path {temp['uwsgi']};\n"
        f"    scgi_temp_path {temp['scgi']};\n"
        f"    include {site};\n"
        "}\n"
    )


@dataclass
class NginxProcess:
    binary: str
    prefix: Path
    port: int
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def conf(self) -> Path:
        return self.prefix / "nginx.conf"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def test_config(self) -> subprocess.CompletedProcess[str]:
        args = [self.binary, "-t", "-p", str(self.prefix), "-c", str(self.conf)]
        return subprocess.run(args, capture_output=True, text=True, timeout=30)

    def start(self) -> None:
        args = [self.binary, "-p", str(self.prefix), "-c", str(self.conf), "-g", "daemon off;"]
        with (self.prefix / "nginx.out").open("wb") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not start:\n{self.log()}")

    def log(self) -> str:
        texts = [p.read_text(errors="replace") for p in (self.prefix / "nginx.out",
                 self.prefix / "error.log") if p.exists()]  # fmt: skip
        return "\n".join(texts)[-4000:]

    def stop(self) -> None:
        """SIGQUIT (graceful), then SIGKILL if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGQUIT)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def prepare_nginx(prefix: Path, upstreams: Sequence[str], binary: str) -> NginxProcess:
    """Render the shipped site and a main config into `prefix` (not started)."""
    prefix.mkdir(parents=True, exist_ok=True)
    port = free_port()
    site = prefix / "paynotify.conf"
    site.write_text(render_site(SHIPPED_SITE.read_text(), upstreams, f"127.0.0.1:{port}"))
    nginx = NginxProcess(binary, prefix, port)
    nginx.conf.write_text(main_config(prefix, site))
    return nginx


@contextlib.contextmanager
def running_nginx(prefix: Path, upstreams: Sequence[str]) -> Iterator[NginxProcess]:
    nginx = prepare_nginx(prefix, upstreams, find_nginx_or_skip())
    nginx.start()
    try:
        yield nginx
    finally:
        nginx.stop()
