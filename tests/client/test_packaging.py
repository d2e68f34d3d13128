"""The client stands alone: importing it pulls in no web framework and no hub code."""

from __future__ import annotations

import subprocess
import sys

import paynotify_client

CHECK = """
import sys
import paynotify_client, paynotify_client.tail, paynotify_client.testing
forbidden = {"falcon", "waitress", "paynotify_hub", "paynotify_bridge", "paynotify_cli", "psycopg"}
loaded = sorted({name.split(".")[0] for name in sys.modules} & forbidden)
assert not loaded, loaded
"""


def test_importing_the_client_loads_no_server_packages() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_every_public_name_is_exported() -> None:
    for name in paynotify_client.__all__:
        assert getattr(paynotify_client, name) is not None
    assert "Subscriber" in paynotify_client.__all__
