"""A hub with the HubAdmin service, and the real `paynotify` CLI as a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from paynotify.v1 import admin_pb2_grpc
from paynotify_hub.admin_service import AdminService
from paynotify_hub.server import Hub
from paynotify_hub.store import Store
from tests.hubkit import GroupsArg, running_hub

__all__ = ["AdminHub", "CliResult", "admin_hub", "admin_stub", "paynotify"]

CLI_TIMEOUT = 30.0


@dataclass
class AdminHub:
    address: str
    hub: Hub
    store: Store

    @property
    def admin(self) -> AdminService:
        assert self.hub.admin is not None, "create_server registers the admin service"
        return self.hub.admin


@contextlib.asynccontextmanager
async def admin_hub(
    tmp_path: Path, groups: GroupsArg = ("billing",), **overrides: Any
) -> AsyncIterator[AdminHub]:
    """`running_hub` (it serves paynotify.v1.HubAdmin) with admin gauges refreshed fast."""
    overrides.setdefault("admin_refresh_interval", 0.1)
    async with running_hub(tmp_path, groups, **overrides) as hub:
        yield AdminHub(hub.address, hub.hub, hub.store)


@contextlib.asynccontextmanager
async def admin_stub(address: str) -> AsyncIterator[admin_pb2_grpc.HubAdminAsyncStub]:
    async with grpc.aio.insecure_channel(address) as channel:
        yield admin_pb2_grpc.HubAdminStub(channel)


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


async def paynotify(*args: str, stdin: bytes = b"") -> CliResult:
    """`python -m paynotify_cli.main ARGS` with stdin not a terminal; never blocks the loop."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYNOTIFY_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "paynotify_cli.main",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), CLI_TIMEOUT)
    assert proc.returncode is not None
    return CliResult(proc.returncode, out.decode(), err.decode())
