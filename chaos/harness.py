"""One mode's chaos run, start to figures: processes, the Alipay simulator, faults, evidence.

    fig = run_mode(preset("short", "sqlite"), workdir)   # Figures; every child killed after
    print(render(fig)); assert fig.passed

Phases: start the cluster (hubs, bridges, members) on a fresh store; send every notification on the
compressed schedule while the injector works; at the time bound stop the faults, restart anything
down and give every notification still waiting one last attempt; probe with a fresh notification
(healthy at the end?); stop every process gracefully; read the store and the members' logs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from chaos import pg
from chaos.alipay import AlipaySimulator, make_corpus, plan_streams, send_probe
from chaos.config import RunSettings
from chaos.evidence import read_member_logs, read_store
from chaos.faults import FaultInjector, FaultPlan
from chaos.procs import ProcessSet, StartError
from chaos.topology import CLIENT_ID, DEFAULT_GROUPS, Cluster, ClusterSettings, Keys
from chaos.verify import Figures, compute_figures, judge
from paynotify_bridge.signature import generate_key_pair, load_private_key
from paynotify_bridge.simulator import RetrySchedule

__all__ = ["SetupError", "run_mode"]

PROGRESS_EVERY = 10.0
PROBE_ATTEMPTS = 8
PROBE_GAP = 1.0
# Alipay's HTTP timeout: the bridge's publish timeout plus this.
HTTP_MARGIN = 5.0
Out = Callable[[str], None]


class SetupError(RuntimeError):
    """The run could not start (a process, the store): no figures."""


def _keys(folder: Path) -> Keys:
    folder.mkdir(parents=True, exist_ok=True)
    private_pem, public_pem = generate_key_pair()
    keys = Keys(folder / "alipay-private.pem", folder / "alipay-public.pem")
    fd = os.open(keys.private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem)
    keys.public_path.write_bytes(public_pem)
    return keys


@contextlib.contextmanager
def _store(settings: RunSettings, workdir: Path) -> Iterator[str]:
    """The store URL: a SQLite file in the workdir, or a fresh PostgreSQL schema (dropped after)."""
    if not settings.multi_hub:
        yield f"sqlite:///{workdir / 'hub.db'}"
        return
    try:
        schema = pg.Schema.create(settings.postgres_dsn)
    except Exception as exc:
        raise SetupError(f"PostgreSQL at {settings.postgres_dsn} is not usable: {exc}") from exc
    try:
        yield schema.url
    finally:
        if settings.pg_restart:
            pg.ensure_up(90)
        with contextlib.suppress(Exception):
            schema.drop()


def run_mode(settings: RunSettings, workdir: Path, out: Out = print) -> Figures:
    """Start everything, send and inject faults, stop, compute the figures; kills every child."""
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    procs = ProcessSet()
    try:
        with _store(settings, workdir) as store_url:
            fig = _run(settings, workdir, store_url, procs, out)
    finally:
        procs.close()
    fig.duration = time.monotonic() - started
    return fig


@dataclass
class _Run:
    """The pieces of one mode's run, wired together."""

    settings: RunSettings
    workdir: Path
    store_url: str
    cluster: Cluster
    sim: AlipaySimulator
    injector: FaultInjector
    private_key: rsa.RSAPrivateKey
    tag: str
    rng: random.Random

    @property
    def http_timeout(self) -> float:
        return self.settings.publish_timeout + HTTP_MARGIN


def _run(
    settings: RunSettings, workdir: Path, store_url: str, procs: ProcessSet, out: Out
) -> Figures:
    run = _prepare(settings, workdir, store_url, procs)
    out(
        f"[{settings.mode}] {settings.notifications} notifications, {len(run.sim.streams)} "
        f"senders, time scale 1:{settings.time_scale:.0f}, faults "
        f"{', '.join(run.injector.plan.kinds)}; logs in {workdir}"
    )
    healed, swept = _drive(run, out)
    return _conclude(run, healed, swept)


def _prepare(settings: RunSettings, workdir: Path, store_url: str, procs: ProcessSet) -> _Run:
    """Start the processes; plan the notifications and the faults (nothing sent yet)."""
    rng = random.Random(settings.seed)
    keys = _keys(workdir / "keys")
    cluster_settings = ClusterSettings(
        hubs=settings.hubs, bridges=settings.bridges, groups=DEFAULT_GROUPS,
        publish_timeout=settings.publish_timeout, ack_deadline=settings.ack_deadline,
        hub_args=settings.hub_args, seed=settings.seed,
    )  # fmt: skip
    cluster = Cluster(cluster_settings, workdir, store_url, keys, procs)
    try:
        cluster.start()
    except StartError as exc:
        raise SetupError(str(exc)) from exc
    private_key = load_private_key(keys.private_path.read_bytes())
    tag = uuid.uuid4().hex[:6].upper()
    streams = plan_streams(
        make_corpus(settings.notifications, tag, rng), rng,
        send_window=settings.send_window, duplicate_fraction=settings.duplicate_fraction,
        duplicate_delay=settings.duplicate_delay,
        schedule=RetrySchedule(time_scale=settings.time_scale),
    )  # fmt: skip
    sim = AlipaySimulator(
        streams, cluster.bridge_urls, private_key, CLIENT_ID,
        workers=settings.workers, http_timeout=settings.publish_timeout + HTTP_MARGIN,
    )  # fmt: skip
    plan = FaultPlan(
        kinds=settings.kinds, interval=settings.fault_interval, window=settings.fault_window,
        max_faults=settings.max_faults, pg_restarts=settings.pg_restarts,
    )  # fmt: skip
    restart = pg.restart_cluster if "pg-restart" in settings.kinds else None
    injector = FaultInjector(cluster, plan, random.Random(rng.random()), pg_restart=restart)
    return _Run(settings, workdir, store_url, cluster, sim, injector, private_key, tag, rng)


def _drive(run: _Run, out: Out) -> tuple[list[str], bool]:
    """Send and inject faults until every sender finished or the time bound; then heal and give
    what is still waiting its last attempt. Returns (processes restarted by healing, all done)."""
    settings = run.settings
    run.sim.start()
    run.injector.start()
    completed = False
    try:
        _wait(run.sim, run.injector, settings, out)
        run.injector.stop()
        healed = run.cluster.heal()
        if settings.pg_restart and settings.multi_hub:
            pg.ensure_up(90)
        swept = run.sim.sweep(run.http_timeout + 10)
        completed = True
    finally:  # interrupted (a signal, a test timeout): stop the threads without waiting
        run.injector.stop(timeout=120 if completed else 0)
        run.sim.stop(timeout=None if completed else 0)
    return healed, swept


def _conclude(run: _Run, healed: list[str], swept: bool) -> Figures:
    """Probe, stop everything gracefully, read the evidence, compute and judge the figures."""
    probe_note = make_corpus(1, f"{run.tag}PROBE", run.rng)[0]
    probe = send_probe(
        run.cluster.bridge_urls[0], run.private_key, CLIENT_ID, probe_note,
        attempts=PROBE_ATTEMPTS, gap=PROBE_GAP, http_timeout=run.http_timeout,
    )  # fmt: skip
    run.cluster.stop_gracefully()
    _dump(run.workdir, run.sim, run.injector)
    settings = run.settings
    label = f"{settings.mode}, {settings.hubs} hub(s), {settings.bridges} bridge(s)"
    fig = compute_figures(
        label,
        run.sim.streams,
        read_store(run.store_url),
        read_member_logs(run.cluster.subscriber_dir),
        DEFAULT_GROUPS,
    )
    fig.time_scale = settings.time_scale
    fig.faults = run.injector.counts()
    fig.fault_errors = list(run.injector.errors)
    fig.healthy_at_end = bool(probe) and probe[-1].success
    fig.health_detail = (
        f"probe answered SUCCESS on attempt {len(probe)}"
        if fig.healthy_at_end
        else f"probe not acknowledged in {len(probe)} attempts"
    )
    if healed:
        fig.health_detail += f"; restarted at the end: {', '.join(healed)}"
    if not swept:
        fig.health_detail += "; the last attempts did not all finish"
    judge(fig)
    return fig


def _dump(workdir: Path, sim: AlipaySimulator, injector: FaultInjector) -> None:
    """Evidence beside the logs: every attempt Alipay made, every fault injected."""
    with (workdir / "alipay.jsonl").open("w") as out:
        for stream in sim.streams:
            for attempt in stream.attempts:
                record = {
                    "stream": stream.id,
                    "payment_id": stream.notification.payment_id,
                    "duplicate": stream.duplicate,
                    **dataclasses.asdict(attempt),
                }
                out.write(json.dumps(record) + "\n")
    with (workdir / "faults.jsonl").open("w") as out:
        for event in injector.events:
            out.write(json.dumps(dataclasses.asdict(event)) + "\n")


def _wait(sim: AlipaySimulator, injector: FaultInjector, settings: RunSettings, out: Out) -> None:
    deadline = time.monotonic() + settings.max_seconds
    while time.monotonic() < deadline:
        if sim.wait(min(PROGRESS_EVERY, max(deadline - time.monotonic(), 0.01))):
            return
        done, total = sim.progress()
        out(f"[{settings.mode}] {done}/{total} senders finished, {len(injector.events)} faults")
