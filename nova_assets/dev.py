"""`nova dev`: the whole platform on this machine with demo traffic, kept alive by a supervisor.

Order matters for the SLO checks: the demo world's users, follows and posts are written to
Postgres before Debezium first starts, so they reach ClickHouse as its snapshot (judged apart
from streamed changes by `cdc_lag`), not as 60k changes streamed in the first minute. Traffic
starts once Dagster answers, so no backlog waits for the first ingestion run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from nova_assets import settings
from nova_assets.core.process import at_nice
from nova_assets.core.world.config import WorldConfig
from nova_assets.errors import NovaError
from nova_assets.stack import Stack
from nova_assets.stack.supervisor import Child, Supervisor, service_unit

REPO_ROOT = Path(__file__).resolve().parent.parent
SUPERVISOR_LOG = "supervisor.log"


def dagster_nice() -> int:
    """NOVA_DAGSTER_NICE (default 5): the nice value of the local Dagster processes, inherited by
    what they start (code servers, every run: ingestion, checks, batch). Each run starts a Python
    process that loads the definitions (~1.5 s of CPU at once), a check run every minute among
    them; at the same priority as `nova serve` that burst takes a core from the read path, whose
    SLO is milliseconds, while runs have seconds (e2v <= 1 s). 0 keeps the caller's priority."""
    return settings.env_int(settings.DAGSTER_NICE, 5, minimum=0, maximum=19)


def seed_world(postgres_dsn: str) -> dict[str, int]:
    """The demo world's users, follows and the posts of its window in Postgres (idempotent)."""
    from nova_assets.core.cdc.runner import apply_source_schema
    from nova_assets.core.world.demo import World
    from nova_assets.generate.app import AppWriter
    from nova_assets.resources import PostgresResource

    postgres = PostgresResource(dsn=postgres_dsn)
    apply_source_schema(postgres)
    with postgres.connect() as conn:
        return AppWriter(World()).seed(conn, time.time())


def apply_schema(url: str) -> list[str]:
    """Create what is missing in ClickHouse (idempotent), so sensors and schedules find their tables."""
    from nova_assets.core.schema.ddl import apply_all
    from nova_assets.core.schema.sql_files import Renderer
    from nova_assets.resources.clickhouse import ClickHouseResource

    clickhouse = ClickHouseResource.from_env(url)
    with clickhouse.ddl_session() as client:
        applied = apply_all(client, Renderer(clickhouse.database, clickhouse.cluster))
    return [name for name, result in applied.items() if result.created]


def start_stack(local: Stack, echo: Callable[[str], None]) -> None:
    """Every service up; on a Debezium that never ran, the demo world is seeded before its snapshot."""
    cdc = local.services.get("cdc")
    first_snapshot = cdc is not None and cdc.pid() is None and not (cdc.dir / "offsets.dat").exists()
    local.up([n for n in local.services if n != "cdc"], echo=echo)
    if cdc is None:
        return
    if first_snapshot:
        counts = seed_world(local.env()[settings.POSTGRES_DSN])
        echo(f"demo world seeded before Debezium's first snapshot: {counts}")
    local.up(["cdc"], echo=echo)


def wait_for_dagster(port: int, alive: Callable[[], bool], timeout_s: float = 180.0) -> None:
    """Until the Dagster webserver answers (its daemon starts beside it), or Dagster exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
                return
        except OSError:
            time.sleep(1)


def first_feeds(env: dict[str, str], wait_for_events_s: float = 0.0, echo: Callable[[str], None] = print) -> None:
    """Materialize the ClickHouse schema assets, feed_recommendations and feed_cache once, as a Dagster
    run the UI shows, so the demo starts complete (feeds to read, checks that measure something)
    instead of waiting for the schedules. With `wait_for_events_s`, first wait for events to arrive."""
    import dagster as dg

    os.environ.update(env)
    from nova_assets.definitions import defs
    from nova_assets.defs.schema.assets import GROUP
    from nova_assets.resources.clickhouse import ClickHouseResource

    if wait_for_events_s > 0:
        clickhouse = ClickHouseResource.from_env(env[settings.CLICKHOUSE_URL])
        deadline = time.monotonic() + wait_for_events_s
        while time.monotonic() < deadline:
            if clickhouse.query("SELECT count() FROM events").result_rows[0][0] > 0:
                break
            time.sleep(1)
    echo("materializing the schema assets, feed_recommendations and feed_cache once (schedules take over)")
    graph = defs.resolve_asset_graph()
    keys = [
        k for k in graph.get_all_asset_keys() if graph.get(k).group_name == GROUP and graph.get(k).is_materializable
    ]
    keys += [dg.AssetKey("feed_recommendations"), dg.AssetKey("feed_cache")]
    job = defs.resolve_implicit_global_asset_job_def()
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        result = job.execute_in_process(instance=instance, asset_selection=keys, raise_on_error=False)
    if not result.success:
        raise NovaError("the first schema / feed_recommendations / feed_cache run failed: see it in the Dagster UI")


class Dev:
    """The processes of one `nova dev`: Dagster and the demo traffic, supervised with the stack."""

    def __init__(self, local: Stack, port: int, traffic: float, serve_port: int, echo: Callable[[str], None]) -> None:
        self.local, self.port, self.traffic, self.serve_port = local, port, traffic, serve_port
        self.echo = echo
        self.env = {**os.environ, **local.env()}
        # the traffic comes from the default demo world: the evaluation can show its oracle
        world = WorldConfig()
        self.env.setdefault(settings.DEMO_WORLD, f"{world.seed}:{world.users}")
        self.children: list[Child] = []
        self.supervisor: Supervisor | None = None
        self._log_file = local.home / SUPERVISOR_LOG

    def log(self, line: str) -> None:
        """A supervisor line: on the console and in NOVA_HOME/supervisor.log."""
        stamped = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}"
        self.echo(stamped)
        with open(self._log_file, "a") as out:
            out.write(stamped + "\n")

    def _nova(self, *args: str) -> Callable[[], subprocess.Popen[bytes]]:
        """Spawner of `python -m nova_assets.cli <args>` into the demo log, in a group of its own."""

        def spawn() -> subprocess.Popen[bytes]:
            with open(self.local.home / "demo-traffic.log", "ab") as log:
                return subprocess.Popen(
                    [sys.executable, "-m", "nova_assets.cli", *args],
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )

        return spawn

    def _dagster(self) -> subprocess.Popen[bytes]:
        """`dagster dev` at NOVA_DAGSTER_NICE (see `dagster_nice`)."""
        cmd = [
            sys.executable, "-m", "dagster", "dev",
            "-w", str(REPO_ROOT / "workspace.yaml"),
            "-h", "127.0.0.1", "-p", str(self.port),
        ]  # fmt: skip
        # its own process group: stopping it stops everything it started (webserver, daemon, code
        # server, runs) within a bounded time, instead of waiting on its graceful shutdown
        return subprocess.Popen(
            cmd, env=self.env, cwd=self.env["DAGSTER_HOME"], start_new_session=True, preexec_fn=at_nice(dagster_nice())
        )

    def start_dagster(self) -> Child:
        dagster_home = self.local.home / "dagster"
        dagster_home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
        self.env["DAGSTER_HOME"] = str(dagster_home)
        self.echo(f"starting Dagster on http://127.0.0.1:{self.port} ...")
        dagster = Child("dagster", self._dagster)
        self.children.append(dagster)
        return dagster

    def _child(self, name: str, *args: str) -> None:
        child = Child(name, self._nova(*args))
        self.children.append(child)
        if self.supervisor is not None:
            self.supervisor.add(child.unit())

    def start_writes(self) -> None:
        """Events, and app changes with CDC: each a supervised process."""
        if self.traffic <= 0:
            return
        year, light = "31536000", f"{max(1.0, self.traffic / 10):g}"
        self._child("traffic-events", "generate", "events", "--rate", f"{self.traffic:g}", "--duration", year,
                    "--malformed", "0.002")  # fmt: skip
        if "cdc" in self.local.services:  # app changes in Postgres, flowing through Debezium
            self._child("traffic-app", "generate", "app", "--rate", light, "--duration", year)

    def start_reads(self) -> None:
        """`nova serve` and light reads against it (the hit-rate and feed-latency checks measure real
        ones). Started once the cache is warm, as a deployment cuts traffic over to a warmed cache:
        reads before the first warm are all misses, and they would hold the 5-minute hit rate down."""
        self._child("serve", "serve", "--port", str(self.serve_port))
        if self.traffic <= 0:
            return
        light = f"{max(1.0, self.traffic / 10):g}"
        self._child("traffic-reads", "generate", "reads", "--rate", light, "--duration", "31536000",
                    "--port", str(self.serve_port))  # fmt: skip
        changes = f"{light} app changes/s, " if "cdc" in self.local.services else ""
        self.echo(
            f"demo traffic: {self.traffic:g} events/s to nova.events, {changes}{light} feed reads/s on "
            f"http://127.0.0.1:{self.serve_port} (log: {self.local.home / 'demo-traffic.log'})"
        )

    def supervise(self) -> Supervisor:
        units = [service_unit(self.local, name) for name in self.local.services]
        units += [child.unit() for child in self.children]
        self.supervisor = Supervisor(units, self.log).start()
        self.log(f"supervisor: watching {', '.join(u.name for u in units)} (a dead one restarts within seconds)")
        return self.supervisor

    def stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
        for child in reversed(self.children):
            child.stop(grace_s=4.0 if child.name == "dagster" else 2.0)


def run(port: int, traffic: float, serve_port: int, echo: Callable[[str], None] = print) -> int:
    """`nova dev` from start to Ctrl-C; returns the exit code."""
    local = Stack()
    start_stack(local, echo)
    created = apply_schema(local.env()[settings.CLICKHOUSE_URL])
    echo(f"ClickHouse schema: {len(created)} object(s) created" if created else "ClickHouse schema: up to date")
    dev = Dev(local, port, traffic, serve_port, echo)

    def interrupted(*_args: object) -> None:
        raise KeyboardInterrupt

    # explicit handlers: a SIGINT ignored by the parent (a background job) would be ignored here too
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    try:
        dagster = dev.start_dagster()
        wait_for_dagster(port, dagster.alive)
        dev.start_writes()
        supervisor = dev.supervise()
        echo(f"Dagster is up on http://127.0.0.1:{port}; waiting for the first events to be loaded ...")
        try:
            first_feeds(dev.env, wait_for_events_s=90 if traffic > 0 else 0, echo=echo)
        except NovaError as exc:  # the schedules will try again; the demo goes on
            echo(f"warning: {exc}")
        dev.start_reads()
        echo(f"Dagster UI: http://127.0.0.1:{port}  (Ctrl-C stops Dagster; `nova stack down` stops the stack)")
        while supervisor is not None:  # the supervisor does the work; this thread waits for Ctrl-C
            time.sleep(3600)
    except KeyboardInterrupt:
        echo("stopping Dagster and the demo traffic (the stack keeps running: `nova stack down`)")
        return 130
    finally:
        dev.stop()
