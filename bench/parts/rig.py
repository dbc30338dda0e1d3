"""One real local platform for a benchmark: the stack, `nova serve` and the Dagster daemon under one
temporary NOVA_HOME."""

from __future__ import annotations

import ast
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from nova_assets.core.process import at_nice, free_port, stop_group
from nova_assets.core.schema.ddl import apply_all
from nova_assets.core.schema.sql_files import Renderer
from nova_assets.dev import dagster_nice
from nova_assets.resources import ClickHouseResource
from nova_assets.stack import Stack
from nova_assets.stack.sql_services import CdcService

ROOT = Path(__file__).resolve().parents[2]
#: the load generators' nice value (see `Platform.nova`)
LOADGEN_NICE = int(os.environ.get("NOVA_BENCH_LOADGEN_NICE", "10"))
#: app changes per second per writer process (`Platform.app_changes`): a writer's transaction is one
#: statement and one round trip, so one writer does 1,000/s at ~80 µs of CPU per change (five at
#: 200/s cost 140: each transaction is a wake-up); two share the rungs' load so that a slow round
#: trip on a full machine does not leave a rung short
WRITER_RATE = 500


class AppLoad:
    """Parallel `nova generate app` writers; each prints what it wrote when it ends."""

    def __init__(self, procs: list[subprocess.Popen[bytes]], outs: list[Path]) -> None:
        self.procs, self.outs = procs, outs

    def wait(self, timeout_s: float) -> int:
        """The changes the writers wrote, once they have all ended (a writer that fell behind its
        rate ends at its duration anyway: fewer than asked)."""
        written = 0
        for proc, out in zip(self.procs, self.outs, strict=True):
            proc.wait(timeout_s)
            lines = out.read_text().strip().splitlines()
            written += int(ast.literal_eval(lines[-1]).get("changes", 0)) if lines else 0
        return written


class Platform:
    """The stack, `nova serve` and the Dagster daemon under one temporary NOVA_HOME."""

    def __init__(self, home: Path) -> None:
        self.home = home
        ports = {name: free_port() for name in ("clickhouse", "kafka", "redis", "postgres")}
        os.environ["NOVA_STACK_SERVICES"] = "clickhouse,kafka,redis,postgres,cdc"
        for name, port in ports.items():
            os.environ[f"NOVA_{name.upper()}_PORT"] = str(port)
        self.stack = Stack(home=home, ports=ports)
        self.serve_port = free_port()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.daemon: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}
        self.log = open(home / "platform.log", "ab")  # noqa: SIM115 - closed in stop()
        self.workspace = home / "workspace.yaml"  # the code server's (`start_code_server`)

    def start(self) -> ClickHouseResource:
        self.stack.up(echo=lambda m: print(f"  {m}", file=sys.stderr))
        dagster_home = self.home / "dagster"
        dagster_home.mkdir()
        shutil.copyfile(ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
        self.env = {**os.environ, **self.stack.env(), "DAGSTER_HOME": str(dagster_home), **CRONS}
        os.environ.update(self.stack.env())
        ch = ClickHouseResource(url=self.env["NOVA_CLICKHOUSE_URL"])
        with ch.session() as client:
            apply_all(client, Renderer(ch.database))
        return ch

    def spawn(
        self, *args: str, env: dict[str, str] | None = None, nice: int = 0, out: Path | None = None
    ) -> subprocess.Popen[bytes]:
        stdout = out.open("wb") if out is not None else self.log
        proc = subprocess.Popen(
            list(args), env={**self.env, **(env or {})}, cwd=ROOT, stdout=stdout, stderr=self.log,
            start_new_session=True, preexec_fn=at_nice(nice),
        )  # fmt: skip
        if out is not None:
            stdout.close()  # the child holds its own copy
        self.procs.append(proc)
        return proc

    def nova(self, *args: str, out: Path | None = None) -> subprocess.Popen[bytes]:
        """A `nova` command; the load generators (`nova generate ...`) at LOADGEN_NICE: the guide's
        load comes from other machines, so here the platform comes first and they take what it
        leaves (the read client stays at 0: it times the reads, a late start counts)."""
        nice = LOADGEN_NICE if args[:1] == ("generate",) else 0
        return self.spawn(sys.executable, "-m", "nova_assets.cli", *args, nice=nice, out=out)

    def app_changes(self, rate: float, seconds: float) -> AppLoad:
        """App changes at `rate`/s from enough writers, each its own connection: one writer waits
        for every commit (a transaction of ~5 changes), and an app has many connections."""
        n = max(1, math.ceil(rate / WRITER_RATE))
        args = ("generate", "app", "--duration", str(seconds), "--users", "2000", "--changes-only")
        outs = [self.home / f"app-writer-{k}-{time.time_ns()}.out" for k in range(n)]
        procs = [self.nova(*args, "--rate", str(rate / n), "--writer", str(k), out=outs[k]) for k in range(n)]
        return AppLoad(procs, outs)

    def published_changes(self) -> int:
        """The changes `nova cdc` has published to Kafka since it started (its status file)."""
        return int(CdcService(self.home, 0).status().get("changes", 0))

    def start_code_server(self) -> None:
        """One long-lived code server the daemon and the CLI load the definitions from, as `nova dev`
        (`dagster dev`) and production (`docker/`: `dagster code-server start`) run it. A daemon
        given the project's workspace.yaml instead starts a code server of its own and replaces it
        every minute (its workspace refresh), each re-importing the definitions: ~0.06 cores the
        platform never pays. Started once: the daemon and `schedules` both need it."""
        if self.workspace.exists():
            return
        port = free_port()
        dagster = str(Path(sys.executable).parent / "dagster")
        self.spawn(
            dagster, "code-server", "start", "-h", "127.0.0.1", "-p", str(port),
            "-m", "nova_assets.definitions", "-a", "defs", nice=dagster_nice(),
        )  # fmt: skip
        self.workspace.write_text(
            "load_from:\n  - grpc_server:\n"
            f"      host: 127.0.0.1\n      port: {port}\n      location_name: nova_assets\n"
        )
        deadline = time.monotonic() + 180
        while True:
            check = subprocess.run(
                [dagster, "api", "grpc-health-check", "-p", str(port), "-h", "127.0.0.1"],
                env=self.env, cwd=ROOT, capture_output=True, timeout=60,
            )  # fmt: skip
            if check.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the code server on port {port} did not answer: {check.stderr.decode()[-500:]}")
            time.sleep(1.0)

    def start_daemon(self) -> None:
        """dagster-daemon on the code server's workspace, at NOVA_DAGSTER_NICE as `nova dev` starts
        it; the crons put a recompute and a warm in the window."""
        self.start_code_server()
        daemon = str(Path(sys.executable).parent / "dagster-daemon")
        self.daemon = self.spawn(daemon, "run", "-w", str(self.workspace), nice=dagster_nice())

    def schedules(self, action: str) -> None:
        """`dagster schedule start|stop` for the project's schedules (as the UI's toggle does); the
        ones in KEPT_OUT are stopped with them and never started."""
        self.start_code_server()
        dagster = str(Path(sys.executable).parent / "dagster")
        for name in SCHEDULES + (KEPT_OUT if action == "stop" else ()):
            subprocess.run(
                [dagster, "schedule", action, name, "-w", str(self.workspace)],
                env=self.env, cwd=ROOT, capture_output=True, check=True, timeout=120,
            )  # fmt: skip

    def warm(self) -> None:
        """One cache warm now (`dagster asset materialize`, a run the instance records): the
        set-up's keys (TTL 300 s ± 30) would expire inside the first rung, after the alone phases,
        and send its reads to ClickHouse; the rungs after it have the schedule's warm."""
        dagster = str(Path(sys.executable).parent / "dagster")
        subprocess.run(
            [dagster, "asset", "materialize", "--select", "feed_cache", "-m", "nova_assets.definitions"],
            env=self.env, cwd=ROOT, capture_output=True, check=True, timeout=300,
        )  # fmt: skip

    @staticmethod
    def _stop_group(proc: subprocess.Popen[bytes]) -> None:
        """Stop a spawned process and everything it started (its session): the daemon's runs too."""
        stop_group(proc, grace_s=20.0, first=signal.SIGTERM)

    def stop_daemon(self) -> None:
        if self.daemon is not None:
            self._stop_group(self.daemon)
            self.daemon = None

    def stop(self) -> None:
        self.stop_daemon()
        for proc in self.procs:
            self._stop_group(proc)
        self.stack.down(echo=lambda _m: None, drain=False)
        self.log.close()


SCHEDULES = ("feed_recommendations_schedule", "feed_cache_schedule", "slo_checks_every_minute")
#: the hourly taste training (at minute 7): its refit, a grid of offline evaluations, takes both
#: cores for minutes, so a ladder's figures depended on whether it started before minute 7
#: (one that did failed 0.5 on it). The set-up trains once; `nova bench feed` measures training.
KEPT_OUT = ("taste_model_schedule",)
CRONS = {"NOVA_RECOMMENDATIONS_CRON": "*/2 * * * *", "NOVA_CACHE_CRON": "1-59/2 * * * *", "NOVA_SLO_CRON": "* * * * *"}
