"""ClickHouse through clickhouse-connect: a server over HTTP(S), or chDB inside one process (`chdb:///dir`).

Locally, `nova stack up` runs a ClickHouse server process that owns the chDB directory, so
Dagster's webserver, daemon and runs, `nova serve`, `nova cdc` and the generators all use the
same HTTP code path as against production. `chdb:///dir` is for single-process use only (a
benchmark's raw ceiling, a test's private directory); pointed at a directory a server owns, it
fails at once and names the server's URL.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import clickhouse_connect
import dagster as dg
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError
from clickhouse_connect.driver.query import QueryResult
from pydantic import Field

from nova_assets import settings
from nova_assets.core import process
from nova_assets.core.clickhouse_files import serving
from nova_assets.core.identifiers import CHDB_SCHEME, chdb_path, quote_identifier, redact
from nova_assets.errors import ConfigError, ServiceUnavailable

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def batch_nice() -> int:
    """NOVA_CLICKHOUSE_BATCH_NICE: the nice value batch work runs at (19; 0 turns it off)."""
    return settings.env_int(settings.CLICKHOUSE_BATCH_NICE, 19, minimum=0, maximum=19)


def batch_settings() -> dict[str, Any]:
    """Batch work (the recompute, taste training, cache warming, evaluation) yields the CPU to
    ingestion and reads: its query threads run at nice NOVA_CLICKHOUSE_BATCH_NICE (19), so they use
    what streaming leaves idle. ClickHouse applies it only with CAP_SYS_NICE (docker/compose.yaml
    grants it to the server); 0 turns it off."""
    nice = batch_nice()
    return {"os_thread_priority": nice} if nice else {}


def _check_url(url: str) -> None:
    if not url:
        raise ConfigError(settings.CLICKHOUSE_URL, url, "is empty", 'set it, or run `eval "$(nova stack env)"`')
    if not (url.startswith(CHDB_SCHEME) or url.startswith(("http://", "https://"))):
        raise ConfigError(
            settings.CLICKHOUSE_URL,
            redact(url),
            "is neither http(s)://user:password@host:port[/db] nor chdb:///<dir>",
        )


def _ensure_database(client: Client, database: str) -> None:
    exists = client.query("SELECT count() FROM system.databases WHERE name = {db:String}", parameters={"db": database})
    if not exists.result_rows[0][0]:
        client.command(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(database)}")


#: one client per (url, database, cluster) in a process: clickhouse-connect's HTTP client is
#: thread-safe without sessions and keeps a pool of keep-alive connections
_clients: dict[tuple[str, str, str, float, bool], Client] = {}
_clients_lock = threading.Lock()


def _open(url: str, database: str, cluster: str, connect_timeout_s: float, batch: bool = False) -> Client:
    path = chdb_path(url)
    if path is not None:
        owner = serving(path)
        if owner is not None:
            raise ConfigError(
                settings.CLICKHOUSE_URL,
                url,
                f"the directory is owned by the ClickHouse server {owner.get('url')} (pid {owner.get('pid')}); "
                "chdb:/// is for single-process use",
                f'use the server: eval "$(nova stack env)" sets {settings.CLICKHOUSE_URL} to it',
            )
        path.mkdir(parents=True, exist_ok=True)
        try:
            client = clickhouse_connect.get_client(dsn=f"{CHDB_SCHEME}{path}")
        except Exception as exc:  # chDB reports a foreign holder as a bare initialisation error
            raise ConfigError(
                settings.CLICKHOUSE_URL,
                url,
                f"could not open the directory ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
                "another process holds it: chdb:/// is for single-process use; start `nova stack up` and use "
                "its server URL",
            ) from exc
    else:
        try:
            # On a cluster the queries' IN/JOIN subqueries read Distributed tables; "global" makes
            # ClickHouse run each subquery once and ship its result, as written for one node.
            client = clickhouse_connect.get_client(
                dsn=url,
                connect_timeout=connect_timeout_s,
                settings={
                    **({"distributed_product_mode": "global"} if cluster else {}),
                    **(batch_settings() if batch else {}),
                },
                autogenerate_session_id=False,
                # on loopback, compressing costs CPU on both sides and saves nothing
                compress=urlsplit(url).hostname not in LOOPBACK,
            )
        except ClickHouseError as exc:
            raise ServiceUnavailable(
                "ClickHouse", redact(url), settings.CLICKHOUSE_URL, str(exc).splitlines()[0], connect_timeout_s
            ) from exc
    _ensure_database(client, database)
    client.database = database
    return client


def shared_client(
    url: str, database: str, cluster: str = "", connect_timeout_s: float = 5.0, batch: bool = False
) -> Client:
    """This process's client for a ClickHouse and database, opened on first use (`batch`: its
    queries run under batch_settings())."""
    key = (url, database, cluster, connect_timeout_s, batch)
    client = _clients.get(key)
    if client is None:
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                client = _clients[key] = _open(url, database, cluster, connect_timeout_s, batch)
    return client


def close_clients() -> None:
    """Close every shared client of this process (tests, and a process about to exit)."""
    with _clients_lock:
        for client in _clients.values():
            with contextlib.suppress(Exception):
                client.close()
        _clients.clear()


class ClickHouseResource(dg.ConfigurableResource):
    """ClickHouse for the whole project; every query goes through `session()` and binds its parameters."""

    url: str = Field(description="chdb:///abs/dir (embedded) or http(s)://user:password@host:port (server).")
    database: str = Field(default="nova", description="Database holding the project's tables.")
    cluster: str = Field(default="", description="Cluster name for ON CLUSTER DDL; empty for single node.")
    ddl_url: str = Field(
        default="", description="The schema owner's URL, for DDL only (a user with CREATE/ALTER/DROP); empty: url."
    )
    connect_timeout_s: float = Field(default=5.0, description="Server mode: connect timeout.")

    @property
    def embedded(self) -> bool:
        return self.url.startswith(CHDB_SCHEME)

    @classmethod
    def from_env(cls, url: str | dg.EnvVar | None = None) -> ClickHouseResource:
        """The resource as the NOVA_CLICKHOUSE_* settings describe it (Definitions, CLI commands,
        subprocesses); `url` overrides NOVA_CLICKHOUSE_URL (an EnvVar reads it at run time)."""
        return cls(
            url=url if url is not None else settings.env_str(settings.CLICKHOUSE_URL),
            database=settings.env_str(settings.CLICKHOUSE_DATABASE, "nova"),
            cluster=settings.env_str(settings.CLICKHOUSE_CLUSTER),
            ddl_url=settings.env_str(settings.CLICKHOUSE_DDL_URL),
        )

    @contextlib.contextmanager
    def session(self) -> Iterator[Client]:
        """The process's clickhouse-connect client for this ClickHouse, its database selected."""
        _check_url(self.url)
        yield shared_client(self.url, self.database, self.cluster, self.connect_timeout_s)

    @contextlib.contextmanager
    def batch_session(self) -> Iterator[Client]:
        """As `session()`, for batch work: its queries yield the CPU to ingestion and reads
        (batch_settings()), and so does the calling thread's own work (decoding results, writing
        Redis, training): it runs at the same nice. chdb:/// is one process with nothing to yield
        to: the plain client."""
        _check_url(self.url)
        if self.embedded:
            yield shared_client(self.url, self.database, self.cluster, self.connect_timeout_s)
            return
        with process.thread_priority(batch_nice()):
            yield shared_client(self.url, self.database, self.cluster, self.connect_timeout_s, batch=True)

    @contextlib.contextmanager
    def ddl_session(self) -> Iterator[Client]:
        """A client as the schema's owner: in production DDL runs as its own user, and the
        pipeline's user only reads and writes rows (docker/clickhouse/users.d/nova.xml)."""
        url = self.ddl_url or self.url
        _check_url(url)
        yield shared_client(url, self.database, self.cluster, self.connect_timeout_s)

    def query(
        self, sql: str, parameters: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
    ) -> QueryResult:
        """Run a SELECT with bound parameters (`{name:Type}` placeholders)."""
        with self.session() as client:
            return client.query(sql, parameters=parameters, settings=settings)

    def command(
        self, sql: str, parameters: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
    ) -> Any:
        """Run DDL or a statement without a result set, with bound parameters."""
        with self.session() as client:
            return client.command(sql, parameters=parameters, settings=settings)

    def insert(
        self,
        table: str,
        rows: Sequence[Sequence[Any]],
        column_names: Sequence[str],
        settings: dict[str, Any] | None = None,
    ) -> int:
        """Insert rows (row-oriented) and return how many were written."""
        with self.session() as client:
            summary = client.insert(table, rows, column_names=list(column_names), settings=settings)
            return int(summary.written_rows)

    def raw(self, sql: str, parameters: dict[str, Any] | None = None) -> bytes:
        """The server's own formatting of a result (honours a trailing FORMAT clause); for `nova sql`."""
        with self.session() as client:
            return client.raw_query(sql, parameters=parameters)

    def ping(self) -> str:
        """Round trip to the server; returns its version."""
        with self.session() as client:
            return str(client.command("SELECT version()"))
