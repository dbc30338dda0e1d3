"""Start, health-check, report and stop the local stack; all state lives under NOVA_HOME.

Services run as detached processes with pid files and logs in `NOVA_HOME/<service>/`, so
`nova stack up` can be run again at any time: it leaves healthy services alone and brings back
whatever is down. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import orjson

from nova_assets import settings
from nova_assets.core import process
from nova_assets.errors import ConfigError
from nova_assets.stack.services import (
    HOST,
    STACK_SERVICES,
    KafkaService,
    RedisService,
    S3Service,
    Service,
    ServiceStatus,
    StackError,
)
from nova_assets.stack.sql_services import CdcService, ClickHouseService, PostgresService

STATE_FILE = "stack.json"


SERVICES: dict[str, type[Service]] = {
    "clickhouse": ClickHouseService,
    "s3": S3Service,
    "kafka": KafkaService,
    "redis": RedisService,
    "postgres": PostgresService,
    "cdc": CdcService,
}


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
