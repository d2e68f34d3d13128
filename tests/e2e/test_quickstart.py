"""The README's "A first look", run as written: `paynotify run`, `tail`, `send-test`.

The commands are read from README.md itself, so the README cannot drift from what works. They use
the documented default ports (hub 50051, bridge 8080) in a fresh working folder.
"""

from __future__ import annotations

import json
import re
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
ME = [sys.executable, "-m", "paynotify_cli.main"]
SUCCESS = '{"result":{"resultCode":"SUCCESS","resultStatus":"S","resultMessage":"success"}}'
START_TIMEOUT = 30.0


def readme_command(verb: str) -> list[str]:
    """The first `.venv/bin/paynotify <verb> ...` line of the README's first-look section."""
    section = README.read_text().split("## A first look", 1)[1].split("\n## ", 1)[0]
    match = re.search(rf"^\.venv/bin/paynotify {verb}\b.*$", section, re.MULTILINE)
    assert match, f"README's first-look section shows no 'paynotify {verb}' command"
    return ME + shlex.split(match.group(0))[1:]


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def wait_for_line(proc: subprocess.Popen[str], needle: str) -> str:
    """Read the process's stdout until a line containing `needle` (bounded by the test timeout)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if needle in line:
            return line
    raise AssertionError(f"process ended before printing {needle!r}: exit {proc.wait()}")


@pytest.fixture
def service(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    for port in (50051, 8080):
        assert port_free(port), f"port {port} is taken: the quickstart uses the default ports"
    proc = subprocess.Popen(
        [*ME, "run"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        wait_for_line(proc, "Ctrl-C stops both")
        yield proc
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0, "paynotify run did not stop cleanly on SIGTERM"


def send_test(cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = readme_command("send-test") + list(extra)
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_readme_first_look(service: subprocess.Popen[str], tmp_path: Path) -> None:
    tail = subprocess.Popen(
        readme_command("tail"), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    try:
        sent = send_test(tmp_path)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert "HTTP 200" in sent.stdout and SUCCESS in sent.stdout
        assert tail.stdout is not None
        line = json.loads(tail.stdout.readline())
        assert line["notification"]["payment_request_id"] == "paymentRequestId01"
        assert line["notification"]["payment_amount"]["value"] == "100"
    finally:
        tail.terminate()
        tail.wait(timeout=20)
    unacked = send_test(tmp_path, "--payment-id", "2020X1", "--timeout", "20")
    assert unacked.returncode != 0
    assert "HTTP 503" in unacked.stdout and SUCCESS not in unacked.stdout
