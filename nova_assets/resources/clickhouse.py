"""ClickHouse through clickhouse-connect: embedded chDB (`chdb:///dir`) or a server (`http(s)://`).

chDB allows one process per data directory, while Dagster runs, the daemon and the webserver
are separate processes. In embedded mode every use therefore takes a cross-process file lock
for as short as the work takes; other processes wait (bounded by `lock_timeout_s`) and are told
who holds it, instead of seeing chDB's raw "Cannot lock file" error.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import clickhouse_connect
import dagster as dg
import filelock
import orjson
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError
from clickhouse_connect.driver.query import QueryResult
from pydantic import Field

from nova_assets import settings
from nova_assets.errors import ConfigError, LockTimeout, ServiceUnavailable
from nova_assets.resources._util import quote_identifier, redact

CHDB_SCHEME = "chdb://"
#: a sticky engine unused this long is closed (an open chDB keeps background threads busy)
STICKY_IDLE_S = 5.0


def chdb_path(url: str) -> Path | None:
    """The data directory of a `chdb:///dir` URL, None for a server URL."""
    if not url.startswith(CHDB_SCHEME):
        return None
    path = url[len(CHDB_SCHEME) :]
    if not path.startswith("/"):
        raise ConfigError(settings.CLICKHOUSE_URL, url, "an embedded URL needs an absolute path", "use chdb:///abs/dir")
    return Path(path)


def _check_url(url: str) -> None:
    if not url:
        raise ConfigError(settings.CLICKHOUSE_URL, url, "is empty", 'set it, or run `eval "$(nova stack env)"`')
    if not (url.startswith(CHDB_SCHEME) or url.startswith(("http://", "https://"))):
        raise ConfigError(
            settings.CLICKHOUSE_URL,
            redact(url),
            "is neither chdb:///<dir> nor http(s)://user:password@host:port/db",
        )


class _EmbeddedEngine:
    """One chDB engine per data directory in this process, shared by its threads.

    The file lock is held while at least one thread of this process uses the engine, and the
    engine is closed when the last one is done, so other processes get their turn.

    Opening the engine costs 25-100 ms, too much for an ingestion run flushing five times a
    second. A *sticky* session therefore keeps the engine open after it ends, for as long as no
    other process is waiting: waiters announce themselves with a file in `<dir>.waiting/`, and a
    watcher thread hands the engine over within about 20 ms (at the end of the current insert).
    An engine left idle for STICKY_IDLE_S is closed too.
    """

    _engines: dict[Path, _EmbeddedEngine] = {}
    _registry_lock = threading.Lock()

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mutex = threading.Lock()
        self.users = 0
        self.client: Client | None = None
        self.lock = filelock.FileLock(f"{path}.lock", thread_local=False)
        self.holder_file = Path(f"{path}.holder")
        self.waiting_dir = Path(f"{path}.waiting")
        self.database_ready: set[str] = set()
        self.sticky = False
        self.watcher: threading.Thread | None = None
        self.last_used = 0.0

    @classmethod
    def for_path(cls, path: Path) -> _EmbeddedEngine:
        with cls._registry_lock:
            engine = cls._engines.get(path)
            if engine is None:
                engine = cls._engines[path] = cls(path)
            return engine

    def _holder(self) -> str:
        try:
            info = orjson.loads(self.holder_file.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return "an unknown process"
        held_for = time.time() - float(info.get("since", time.time()))
        who = f"pid {info.get('pid')} ({info.get('cmd', '?')}) on {info.get('host', '?')}"
        return f"{who}, holding it for {held_for:.1f} s"

    def _acquire(self, timeout_s: float) -> None:
        try:
            self.lock.acquire(timeout=0)
        except filelock.Timeout:
            self._wait_for_lock(timeout_s)
        self._write_holder()

    def _wait_for_lock(self, timeout_s: float) -> None:
        self.waiting_dir.mkdir(parents=True, exist_ok=True)
        marker = self.waiting_dir / f"{socket.gethostname()}-{os.getpid()}-{threading.get_ident()}"
        marker.touch()
        try:
            self.lock.acquire(timeout=timeout_s, poll_interval=0.005)
        except filelock.Timeout:
            raise LockTimeout(
                f"the embedded ClickHouse at {self.path} is in use by {self._holder()}; waited {timeout_s:g} s "
                f"({settings.CLICKHOUSE_LOCK_TIMEOUT}). Long holds mean a stuck process: stop it, or raise the timeout."
            ) from None
        finally:
            marker.unlink(missing_ok=True)

    def _write_holder(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        info = {"pid": os.getpid(), "cmd": " ".join(sys.argv)[:200], "host": socket.gethostname(), "since": time.time()}
        self.holder_file.write_bytes(orjson.dumps(info))

    def _release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.holder_file.unlink()
        self.lock.release()

    def _someone_waiting(self) -> bool:
        try:
            return any(self.waiting_dir.iterdir())
        except FileNotFoundError:
            return False

    def _close(self) -> None:
        """Close the engine and release the lock; caller holds the mutex and users == 0."""
        if self.client is not None:
            self.client.close()
            self.client = None
            self._release()
        self.sticky = False

    def _watch(self) -> None:
        """While the engine is kept open idle, hand it over as soon as another process waits."""
        while True:
            time.sleep(0.02)
            with self.mutex:
                if self.client is None or not self.sticky:
                    self.watcher = None
                    return
                idle = time.monotonic() - self.last_used > STICKY_IDLE_S
                if self.users == 0 and (idle or self._someone_waiting()):
                    self._close()
                    self.watcher = None
                    return

    def _release_others(self) -> None:
        """chDB opens one data path per process: close other idle engines of this process first."""
        with self._registry_lock:
            others = [e for e in self._engines.values() if e is not self]
        for other in others:
            other.release()

    def release(self) -> None:
        """Close a sticky engine now (end of an ingestion run)."""
        with self.mutex:
            self.sticky = False
            if self.users == 0:
                self._close()

    @contextlib.contextmanager
    def session(self, database: str, timeout_s: float, sticky: bool = False) -> Iterator[Client]:
        with self.mutex:
            if sticky:
                self.sticky = True
            if self.client is None:
                self._release_others()
                self._acquire(timeout_s)
                try:
                    self.client = _open_chdb(self.path)
                except BaseException:
                    self._release()
                    raise
            self.users += 1
            client = self.client
        assert client is not None
        try:
            if database not in self.database_ready:
                _ensure_database(client, database)
                self.database_ready.add(database)
            client.database = database
            yield client
        finally:
            with self.mutex:
                self.users -= 1
                self.last_used = time.monotonic()
                if self.users == 0 and self.client is not None:
                    if self.sticky and not self._someone_waiting():
                        if self.watcher is None:
                            self.watcher = threading.Thread(target=self._watch, name="chdb-handover", daemon=True)
                            self.watcher.start()
                    else:
                        self._close()


def _open_chdb(path: Path) -> Client:
    path.mkdir(parents=True, exist_ok=True)
    try:
        return clickhouse_connect.get_client(dsn=f"{CHDB_SCHEME}{path}")
    except Exception as exc:  # chDB reports a foreign holder as a bare initialisation error
        raise LockTimeout(
            f"could not open the embedded ClickHouse at {path} ({settings.CLICKHOUSE_URL}): {exc}. "
            "Another process that does not use nova's lock (a stray chdb session?) may hold the directory."
        ) from exc


def _ensure_database(client: Client, database: str) -> None:
    exists = client.query("SELECT count() FROM system.databases WHERE name = {db:String}", parameters={"db": database})
    if not exists.result_rows[0][0]:
        client.command(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(database)}")


class ClickHouseResource(dg.ConfigurableResource):
    """ClickHouse for the whole project; every query goes through `session()` and binds its parameters."""

    url: str = Field(description="chdb:///abs/dir (embedded) or http(s)://user:password@host:port (server).")
    database: str = Field(default="nova", description="Database holding the project's tables.")
    cluster: str = Field(default="", description="Cluster name for ON CLUSTER DDL; empty for single node.")
    lock_timeout_s: float = Field(default=30.0, description="Embedded mode: how long to wait for another process.")
    connect_timeout_s: float = Field(default=5.0, description="Server mode: connect timeout.")

    @property
    def embedded(self) -> bool:
        return self.url.startswith(CHDB_SCHEME)

    @contextlib.contextmanager
    def session(self, sticky: bool = False) -> Iterator[Client]:
        """A clickhouse-connect client for a short piece of work (holds the embedded lock).

        `sticky=True` (for frequent short writes) keeps an embedded engine open between sessions
        until another process asks for it or `release()` is called.
        """
        _check_url(self.url)
        path = chdb_path(self.url)
        if path is not None:
            with _EmbeddedEngine.for_path(path).session(self.database, self.lock_timeout_s, sticky) as client:
                yield client
            return
        try:
            # On a cluster the queries' IN/JOIN subqueries read Distributed tables; "global" makes
            # ClickHouse run each subquery once and ship its result, as written for one node.
            cluster = {"distributed_product_mode": "global"} if self.cluster else {}
            client = clickhouse_connect.get_client(
                dsn=self.url, connect_timeout=self.connect_timeout_s, settings=cluster
            )
        except ClickHouseError as exc:
            raise ServiceUnavailable(
                "ClickHouse",
                redact(self.url),
                settings.CLICKHOUSE_URL,
                str(exc).splitlines()[0],
                self.connect_timeout_s,
            ) from exc
        try:
            _ensure_database(client, self.database)
            client.database = self.database
            yield client
        finally:
            client.close()

    def release(self) -> None:
        """Give up an engine kept open by sticky sessions (no-op for a server)."""
        path = chdb_path(self.url) if self.url.startswith(CHDB_SCHEME) else None
        if path is not None:
            _EmbeddedEngine.for_path(path).release()

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
