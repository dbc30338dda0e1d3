"""chDB connections for the HTTP layer: a pool for requests without a session, one held per session.

chDB keeps temporary tables, `SET` and `USE` per connection, which is exactly ClickHouse's
session state. A request without `session_id` borrows a pooled connection and must leave nothing
behind on it, so a request that could create a temporary table (or brings external data) runs on
a connection of its own, closed afterwards (opening one costs ~0.1 ms). A request with a
`session_id` runs on the session's connection, one request at a time, as ClickHouse does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import chdb

from nova_assets.stack.clickhouse_http import system_tables
from nova_assets.stack.clickhouse_http.errors import (
    INVALID_SESSION_TIMEOUT,
    SESSION_IS_LOCKED,
    SESSION_NOT_FOUND,
    UNKNOWN_TABLE,
    ClickHouseError,
)
from nova_assets.stack.clickhouse_http.protocol import Query, engine_sql

STREAM_BUFFER = 1 << 20  # a result up to this size may go out as one response
FLUSH_AFTER = 0.05  # seconds: a slower result starts streaming with what it has, as ClickHouse flushes blocks
#: chDB's configuration: the one user's rights (see the file)
CONFIG = Path(__file__).with_name("chdb.xml")
DEFAULT_SESSION_TIMEOUT = 60.0
MAX_SESSION_TIMEOUT = 3600.0


def quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def quote_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def fetch(streaming: Any) -> bytes:
    """The next block of a streaming result as bytes (b"" at the end)."""
    chunk = streaming.fetch()
    if chunk is None:
        return b""
    data = chunk.bytes() if hasattr(chunk, "bytes") else chunk
    return bytes(data) if data else b""


@dataclass
class Connection:
    """One chDB connection and the state this server set on it (database, per-request settings).

    `base` holds what the connection's own `SET` statements chose (a session's settings): a
    request's URL settings are undone back to it, not to the server default.
    """

    conn: Any
    database: str = ""
    settings: dict[str, str] = field(default_factory=dict)
    base: dict[str, str] = field(default_factory=dict)
    default_database: str = "default"

    def run(self, sql: str, fmt: str = "TabSeparated", params: dict[str, str] | None = None) -> Any:
        try:
            return self.conn.query(engine_sql(sql), fmt, params=params or {})
        except Exception as exc:  # chDB raises its own error types with ClickHouse's text
            raise ClickHouseError.from_engine(exc) from None

    def execute(self, query: Query) -> Any:
        """Run a query and return chDB's whole result (one thread hop for the whole request)."""
        self.prepare(query.database, query.settings)
        try:
            return self.run(query.sql, query.fmt, query.params)
        except ClickHouseError as exc:
            stand_in = self._stand_in(query, exc)
            if stand_in is None:
                raise
            return self.run(*stand_in)

    def _stand_in(self, query: Query, exc: ClickHouseError) -> tuple[str, str, dict[str, str]] | None:
        """What a server would have answered where chDB cannot: `SHOW CREATE` of a system table."""
        table = system_tables.show_create_table(query.sql) if exc.code == UNKNOWN_TABLE else None
        if table is None:
            return None
        params = {"table": table}
        if bytes(self.run(system_tables.EXISTS, "TSV", params).bytes()).strip() != b"1":
            return None  # no such table: the engine's error stands
        return system_tables.statement_sql(), query.fmt, params

    def begin_stream(
        self, query: Query, buffer: int, flush_after: float | None, transform: Callable[[bytes], bytes] | None = None
    ) -> tuple[Any, bytes, bool]:
        """Start a streamed query and read its first blocks.

        Reads until the result ends, `buffer` bytes are in hand, or (when `flush_after` is set) the
        query has run that long with data ready. Returns the stream, what was read, and whether
        that was all: a small or fast result then goes out as one response and an early error
        still gets its HTTP status, as ClickHouse's response buffer gives it.
        """
        self.prepare(query.database, query.settings)
        try:
            return self._begin_stream(query.sql, query.fmt, query.params, buffer, flush_after, transform)
        except ClickHouseError as exc:
            stand_in = self._stand_in(query, exc)
            if stand_in is None:
                raise
            return self._begin_stream(*stand_in, buffer, flush_after, transform)

    def _begin_stream(
        self,
        sql: str,
        fmt: str,
        params: dict[str, str],
        buffer: int,
        flush_after: float | None,
        transform: Callable[[bytes], bytes] | None,
    ) -> tuple[Any, bytes, bool]:
        started = time.monotonic()
        try:
            streaming = self.conn.send_query(engine_sql(sql), fmt, params=params)
            head = bytearray()
            while len(head) < buffer:
                block = fetch(streaming)
                if not block:
                    streaming.close()
                    return streaming, bytes(head), True
                head += transform(block) if transform is not None else block
                if flush_after is not None and time.monotonic() - started >= flush_after:
                    break
            return streaming, bytes(head), False
        except Exception as exc:
            raise ClickHouseError.from_engine(exc) from None

    def begin_insert(self, query: Query) -> Any:
        """Open chDB's streaming insert for `[WITH ...] INSERT ...` (its FORMAT split off)."""
        self.prepare(query.database, query.settings)
        try:
            return self.conn.send_insert(engine_sql(query.sql), query.insert_format)
        except Exception as exc:
            raise ClickHouseError.from_engine(exc) from None

    def insert(self, query: Query, data: bytes) -> Any:
        """A whole insert in one call: open, append the data, commit."""
        inserter = self.begin_insert(query)
        try:
            if data:
                inserter.append(data)
            return inserter.finish()
        except Exception as exc:
            with contextlib.suppress(Exception):
                inserter.cancel()
            raise ClickHouseError.from_engine(exc) from None

    def load_external(self, query: Query, name: str, structure: str, fmt: str, data: bytes) -> None:
        """External data: a temporary table of this connection that the query reads by name.

        Loaded under the query's settings (`input_format_allow_errors_*` apply to it, as in ClickHouse).
        """
        self.prepare(query.database, query.settings)
        self.run(f"CREATE TEMPORARY TABLE {quote_identifier(name)} ({structure}) ENGINE = Memory")
        if data:
            try:
                inserter = self.conn.send_insert(f"INSERT INTO {quote_identifier(name)}", fmt)
                inserter.append(data)
                inserter.finish()
            except Exception as exc:
                raise ClickHouseError.from_engine(exc) from None

    def session_statement(self, query: Query) -> None:
        """`SET` / `USE` in a session: run for real, then remember what the session now has."""
        self.prepare(query.database, {})
        self.run(query.sql, "TabSeparated", query.params)
        if query.statement == "use":
            row = self.run("SELECT currentDatabase()").bytes().decode().strip()
            self.database = self.default_database = row
        else:
            rows = self.run("SELECT name, value FROM system.settings WHERE changed", "TabSeparated")
            changed = dict(line.split("\t", 1) for line in rows.bytes().decode().splitlines() if "\t" in line)
            self.base = changed

    def prepare(self, database: str, settings: dict[str, str]) -> None:
        """Bring the connection to the request's database and settings, changing only what differs."""
        database = database or self.default_database
        try:
            if database != self.database:
                self.run(f"USE {quote_identifier(database)}")
                self.database = database
            for name in [n for n in self.settings if n not in settings]:
                self._restore(name)
                del self.settings[name]
            for name, value in settings.items():
                if self.settings.get(name) != value:
                    self.run(f"SET {name} = {quote_string(value)}")
                    self.settings[name] = value
        except ClickHouseError:
            self.database = ""  # unknown state: reset everything on next use
            for name in list(settings):
                with contextlib.suppress(ClickHouseError):
                    self._restore(name)
                self.settings.pop(name, None)
            raise

    def _restore(self, name: str) -> None:
        """A request's setting back to the session's own value (`base`), or the default."""
        back = self.base.get(name)
        self.run(f"SET {name} = {quote_string(back) if back is not None else 'DEFAULT'}")

    def drop_external(self, names: list[str]) -> None:
        """External tables belong to their query: a session keeps none of them."""
        for name in names:
            with contextlib.suppress(ClickHouseError):
                self.run(f"DROP TEMPORARY TABLE IF EXISTS {quote_identifier(name)}")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


@dataclass
class Session:
    """A ClickHouse HTTP session: its own connection, used by one request at a time."""

    id: str
    connection: Connection
    timeout: float
    expires: float = 0.0
    busy: bool = False

    def touch(self) -> None:
        self.expires = time.monotonic() + self.timeout


class Engine:
    """The pool, the sessions, and the one rule for which connection a request runs on."""

    def __init__(self, path: Path, size: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.free = [self.open() for _ in range(size)]
        self.available = asyncio.Semaphore(size)  # engine work at once, sessions included
        self.sessions: dict[str, Session] = {}

    def open(self) -> Connection:
        return Connection(chdb.connect(f"{self.path}?config-file={CONFIG}"))

    @contextlib.asynccontextmanager
    async def connection(self, query: Query | None = None, isolated: bool = False) -> AsyncIterator[Connection]:
        """The connection a request runs on: its session's, a private one, or a pooled one."""
        session_id = query.args.get("session_id", "") if query is not None else ""
        if query is not None and session_id:
            session = self._session(session_id, query)
            session.busy = True
            try:
                async with self.available:
                    yield session.connection
            finally:
                session.busy = False
                session.touch()
                if query is not None and query.flag("close_session"):
                    self.close_session(session_id)
            return
        if isolated:  # a temporary table without a session lives and dies with this request
            async with self.available:
                private = self.open()
                try:
                    yield private
                finally:
                    private.close()
            return
        await self.available.acquire()
        conn = self.free.pop()
        try:
            yield conn
        finally:
            self.free.append(conn)
            self.available.release()

    def _session(self, session_id: str, query: Query) -> Session:
        raw_timeout = query.args.get("session_timeout", "")
        try:
            timeout = float(raw_timeout) if raw_timeout else DEFAULT_SESSION_TIMEOUT
        except ValueError:
            timeout = -1.0
        if not 0 <= timeout <= MAX_SESSION_TIMEOUT:
            raise ClickHouseError(
                INVALID_SESSION_TIMEOUT,
                f"Invalid session timeout: '{raw_timeout}' (seconds, at most {MAX_SESSION_TIMEOUT:.0f})",
                "INVALID_SESSION_TIMEOUT",
            )
        session = self.sessions.get(session_id)
        if session is not None and not session.busy and session.expires < time.monotonic():
            self.close_session(session_id)  # timed out before the reaper's next pass: it is gone
            session = None
        if session is None:
            if query.flag("session_check"):
                raise ClickHouseError(SESSION_NOT_FOUND, f"Session {session_id} not found", "SESSION_NOT_FOUND")
            session = Session(session_id, self.open(), timeout)
            self.sessions[session_id] = session
        elif session.busy:
            raise ClickHouseError(
                SESSION_IS_LOCKED,
                f"Session {session_id} is locked by a concurrent client",
                "SESSION_IS_LOCKED",
            )
        session.timeout = timeout
        session.touch()
        return session

    def expire(self) -> None:
        now = time.monotonic()
        for session_id in [s.id for s in self.sessions.values() if not s.busy and s.expires < now]:
            self.close_session(session_id)

    def close_session(self, session_id: str) -> None:
        session = self.sessions.pop(session_id, None)
        if session is not None:
            session.connection.close()

    def close(self) -> None:
        for conn in self.free:
            conn.close()
        for session_id in list(self.sessions):
            self.close_session(session_id)
