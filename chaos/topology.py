"""Which processes a chaos run starts, and how: hubs, bridges, subscriber members.

    cluster = Cluster(settings, workdir, store_url, keys, procs)
    cluster.start()            # hubs, then bridges, then the members of every group
    cluster.bridge_urls        # where the simulator POSTs (round-robin, like a load balancer)
    cluster.heal()             # restart anything that is not running (after the faults)
    cluster.stop_gracefully()  # members, bridges, hubs: SIGTERM, bounded

Groups (the same in both modes): `billing` required for every type (2 members), `ledger` required
for PAYMENT_RESULT only (1 member), `audit` best-effort (1 member). With several hubs each member
names them all, its own first (pick-first: it fails over when its hub dies).
"""

from __future__ import annotations

import re
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from chaos.procs import ManagedProcess, ProcessSet, child_env
from chaos.subscriber_proc import READY_LINE

__all__ = [
    "CLIENT_ID",
    "DEFAULT_GROUPS",
    "Cluster",
    "ClusterSettings",
    "GroupPlan",
    "Keys",
    "Member",
]

CLIENT_ID: Final = "CHAOS_ALIPAY_SIMULATOR"
NOTIFY_PATH: Final = "/alipay/notify"
HUB_READY: Final = re.compile(r"paynotify-hub listening on (\S+)")
BRIDGE_READY: Final = re.compile(r"paynotify-bridge listening on (\S+)")
SUBSCRIBER_READY: Final = re.compile(re.escape(READY_LINE))
REPO_ROOT: Final = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class GroupPlan:
    name: str
    required: bool
    types: tuple[str, ...] = ()
    members: int = 1

    @property
    def flag(self) -> str:
        """`--group` text of `paynotify hub`."""
        text = f"{self.name}:{'required' if self.required else 'best-effort'}"
        return f"{text}:{'+'.join(self.types)}" if self.types else text

    def wants(self, notify_type: str) -> bool:
        return not self.types or notify_type in self.types


DEFAULT_GROUPS: Final = (
    GroupPlan("billing", required=True, members=2),
    GroupPlan("ledger", required=True, types=("PAYMENT_RESULT",), members=1),
    GroupPlan("audit", required=False, members=1),
)


@dataclass(frozen=True)
class Keys:
    """The key pair playing Alipay's: the bridges verify with the public one."""

    private_path: Path
    public_path: Path


@dataclass(frozen=True)
class ClusterSettings:
    hubs: int
    bridges: int
    groups: tuple[GroupPlan, ...]
    publish_timeout: float
    ack_deadline: float
    hub_args: tuple[str, ...]
    seed: int
    log_level: str = "INFO"


@dataclass
class Member:
    group: GroupPlan
    name: str
    hub_index: int
    log_path: Path
    process: ManagedProcess


# Short backoffs and lease checks: the run compresses Alipay's day into minutes. The safety poll
# keeps its production default (1 s): at 0.2 s, waiting Publishes polling the PostgreSQL pool
# starved the multi-hub run (see docs/chaos.md).
HUB_FAST_FLAGS: Final = (
    "--min-backoff", "0.1", "--max-backoff", "1", "--max-attempts", "20",
    "--lease-check-interval", "0.1", "--shutdown-grace", "2",
)  # fmt: skip


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    settings: ClusterSettings
    workdir: Path
    store_url: str
    keys: Keys
    procs: ProcessSet
    hubs: list[ManagedProcess] = field(default_factory=list)
    bridges: list[ManagedProcess] = field(default_factory=list)
    members: list[Member] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.subscriber_dir.mkdir(parents=True, exist_ok=True)
        self.hub_addresses = [f"127.0.0.1:{free_port()}" for _ in range(self.settings.hubs)]
        self.hubs = [self._hub(i, a) for i, a in enumerate(self.hub_addresses)]
        self.bridge_ports = [free_port() for _ in range(self.settings.bridges)]
        self.bridges = [self._bridge(i, port) for i, port in enumerate(self.bridge_ports)]
        self.members = self._members()

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def subscriber_dir(self) -> Path:
        return self.workdir / "subscribers"

    @property
    def bridge_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}{NOTIFY_PATH}" for port in self.bridge_ports]

    @property
    def required_groups(self) -> tuple[GroupPlan, ...]:
        return tuple(g for g in self.settings.groups if g.required)

    def all_processes(self) -> list[ManagedProcess]:
        return [*self.hubs, *self.bridges, *(m.process for m in self.members)]

    def _cli(self, *args: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "paynotify_cli.main",
            "--log-level",
            self.settings.log_level,
            *args,
        ]

    def _process(self, name: str, argv: list[str], ready: re.Pattern[str]) -> ManagedProcess:
        env = child_env({"PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"})
        process = ManagedProcess(name, argv, self.log_dir, env, ready, cwd=self.workdir)
        return self.procs.add(process)

    def _hub(self, index: int, address: str) -> ManagedProcess:
        argv = self._cli("hub", "--listen", address, "--store", self.store_url)
        for group in self.settings.groups:
            argv += ["--group", group.flag]
        argv += ["--ack-deadline", str(self.settings.ack_deadline), *HUB_FAST_FLAGS]
        argv += self.settings.hub_args
        return self._process(f"hub{index + 1}", argv, HUB_READY)

    def _bridge(self, index: int, port: int) -> ManagedProcess:
        argv = self._cli(
            "bridge",
            "--listen",
            f"127.0.0.1:{port}",
            "--hub",
            ",".join(self.hub_addresses),
            "--alipay-public-key",
            f"1={self.keys.public_path}",
            "--client-id",
            CLIENT_ID,
            "--publish-timeout",
            str(self.settings.publish_timeout),
        )
        return self._process(f"bridge{index + 1}", argv, BRIDGE_READY)

    def _members(self) -> list[Member]:
        members = []
        for group in self.settings.groups:
            for i in range(group.members):
                name = f"{group.name}-{i + 1}"
                hub_index = i % len(self.hub_addresses)
                log_path = self.subscriber_dir / f"{name}.jsonl"
                argv = [
                    sys.executable,
                    "-m",
                    "chaos.subscriber_proc",
                    "--hub",
                    self._member_target(hub_index),
                    "--group",
                    group.name,
                    "--member",
                    name,
                    "--log",
                    str(log_path),
                    "--ack-deadline",
                    str(self.settings.ack_deadline),
                    "--seed",
                    str(self.settings.seed),
                ]
                process = self._process(name, argv, SUBSCRIBER_READY)
                members.append(Member(group, name, hub_index, log_path, process))
        return members

    def _member_target(self, first: int) -> str:
        """One hub, or every hub with `first` first: gRPC's pick-first moves the member to another
        hub when its own dies, as a DNS name listing every hub would."""
        if len(self.hub_addresses) == 1:
            return self.hub_addresses[0]
        rotated = self.hub_addresses[first:] + self.hub_addresses[:first]
        return "ipv4:" + ",".join(rotated)

    def start(self) -> None:
        for process in self.all_processes():
            process.start()

    def heal(self) -> list[str]:
        """Start whatever is not running; the names of those restarted."""
        restarted = []
        for process in self.all_processes():
            if not process.alive():
                process.start()
                restarted.append(process.name)
        return restarted

    def stop_gracefully(self) -> dict[str, int | None]:
        """SIGTERM members first (their acks land), then bridges, then hubs; exit codes."""
        codes: dict[str, int | None] = {}
        for tier in ([m.process for m in self.members], self.bridges, self.hubs):
            for process in tier:  # all of a tier at once, then wait for each
                process.signal(signal.SIGTERM)
            for process in tier:
                codes[process.name] = process.terminate()
        return codes
