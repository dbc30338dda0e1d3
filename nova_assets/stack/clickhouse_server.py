"""The local ClickHouse server: one process owns the chDB directory and serves ClickHouse's HTTP interface.

chDB allows one process per data directory, while Dagster's webserver, daemon, runs, `nova serve`
and `nova cdc` are separate processes. Instead of handing one embedded engine around between
them, this process opens a bounded pool of chDB connections (they run queries concurrently and
release the GIL) and every other part talks to it with clickhouse-connect over HTTP, exactly as
to a production server. HTTP is Starlette on uvicorn; the SQL engine is chDB.

Speaks what clickhouse-connect, curl and ClickHouse tools send: `/ping`, GET and POST `/?query=`,
the query in the body, `INSERT ... FORMAT X` with its data in the body (any input format,
streamed into chDB), `param_*` bindings, settings as URL parameters, `database`, `query_id`,
`default_format`, compressed bodies (Content-Encoding) and compressed responses
(`enable_http_compression=1` + Accept-Encoding), the `X-ClickHouse-*` headers, and errors as
ClickHouse returns them (`Code: N. DB::Exception: ...`, HTTP status, exception-code header).
There are no server-side sessions: like a ClickHouse request without `session_id`, `SET` and
`USE` statements change nothing for later requests.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import contextlib
import hmac
import logging
import os
import re
import secrets
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import chdb
import orjson
from starlette.applications import Starlette
from starlette.datastructures import MultiDict
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from nova_assets.stack.clickhouse_files import SERVER_FILE, USER, password_for

log = logging.getLogger("nova.clickhouse")

#: formats whose per-block output concatenates into one valid stream (chDB streams them block by block)
STREAMABLE = frozenset({"native", "tabseparated", "tsv", "csv", "rowbinary", "jsoneachrow", "jsoncompacteachrow"})
#: URL parameters that steer the HTTP layer, not the query (everything else unknown is a setting)
TRANSPORT_PARAMS = frozenset(
    {
        "query", "database", "default_format", "user", "password", "query_id", "quota_key",
        "session_id", "session_timeout", "session_check", "compress", "decompress",
        "enable_http_compression", "http_zlib_compression_level", "send_progress_in_http_headers",
        "http_headers_progress_interval_ms", "wait_end_of_query", "buffer_size", "http_response_buffer_size",
        "client_protocol_version", "add_http_cors_header", "cancel_http_readonly_queries_on_client_close",
        "http_write_exception_in_output_format", "stacktrace", "role", "close_session",
    }
)  # fmt: skip
SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TRAILING_FORMAT = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.IGNORECASE)
INSERT_HEAD = re.compile(
    rb"^\s*INSERT\s+INTO\b.*?\bFORMAT\s+([A-Za-z0-9_]+)[ \t]*(?:\r?\n)?", re.IGNORECASE | re.DOTALL
)
FIRST_WORD = re.compile(r"^\s*(?:--[^\n]*\n\s*|/\*.*?\*/\s*)*([A-Za-z]+)", re.DOTALL)
WRITE_STATEMENTS = frozenset(
    {
        "insert", "create", "drop", "alter", "truncate", "delete", "update", "rename", "optimize", "system",
        "grant", "revoke", "kill", "attach", "detach", "exchange", "undrop", "backup", "restore",
    }
)  # fmt: skip
ERROR_CODE = re.compile(r"Code: (\d+)\.")
#: ClickHouse's HTTP status for an exception code (everything else is 500)
HTTP_STATUS = {
    62: 400, 36: 400, 27: 400, 26: 400, 33: 400, 38: 400, 41: 400, 72: 400, 117: 400, 130: 400, 456: 400, 457: 400,
    115: 400,  # UNKNOWN_SETTING
    60: 404, 81: 404, 47: 404, 46: 404, 16: 404,  # unknown table, database, identifier, function, column
    164: 403, 497: 403, 516: 403, 192: 403, 193: 403, 194: 403,  # readonly, access denied, authentication
    159: 504, 209: 504, 210: 504,  # timeouts
    202: 503,  # too many simultaneous queries
}  # fmt: skip
CONTENT_TYPES = {
    "tabseparated": "text/tab-separated-values; charset=UTF-8",
    "tsv": "text/tab-separated-values; charset=UTF-8",
    "tabseparatedwithnames": "text/tab-separated-values; charset=UTF-8",
    "csv": "text/csv; charset=UTF-8; header=absent",
    "csvwithnames": "text/csv; charset=UTF-8; header=present",
    "json": "application/json; charset=UTF-8",
    "jsoneachrow": "application/x-ndjson; charset=UTF-8",
    "jsoncompact": "application/json; charset=UTF-8",
    "pretty": "text/plain; charset=UTF-8",
}
FORM_TYPES = ("multipart/form-data",)  # curl and urllib label a plain body urlencoded: that is the query
MAX_FORM_PART = 256 << 20  # a form field may hold a long query or a large bound array
INSERT_CHUNK = 1 << 20  # bytes handed to chDB per append (fewer engine calls than per network read)
STREAM_BUFFER = 1 << 20  # results up to this size go out as one response, larger ones stream


class ClickHouseError(Exception):
    """An error to answer the way ClickHouse does: its code, its text, its HTTP status."""

    def __init__(self, code: int, message: str, name: str = "") -> None:
        self.code = code
        text = message if message.startswith("Code: ") else f"Code: {code}. DB::Exception: {message}"
        if name and not text.rstrip().endswith(")"):
            text += f" ({name})"
        super().__init__(text)

    @classmethod
    def from_engine(cls, exc: BaseException) -> ClickHouseError:
        text = str(exc).strip()
        start = text.find("Code: ")
        text = text[start:] if start > 0 else text
        match = ERROR_CODE.search(text)
        return cls(int(match.group(1)) if match else 1001, text)

    @property
    def status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)


# --- compression ------------------------------------------------------------------------------


def _zstd() -> Any:
    """zstd from the standard library (3.14+) or its backport, as clickhouse-connect uses it."""
    try:
        from compression import zstd  # type: ignore[import-not-found]
    except ImportError:
        from backports import zstd  # type: ignore[import-not-found,no-redef]
    return zstd


class _Frames:
    """Decompresses a body of one or more concatenated frames (clients compress block by block)."""

    def __init__(self, new: Callable[[], Any]) -> None:
        self.new = new
        self.current = new()

    def __call__(self, data: bytes) -> bytes:
        out = bytearray()
        while data:
            out += self.current.decompress(data)
            if not self.current.eof:
                break
            data = self.current.unused_data
            self.current = self.new()
        return bytes(out)


def _decompressor(encoding: str) -> Callable[[bytes], bytes] | None:
    """An incremental decompressor for a Content-Encoding (None: identity)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip", "deflate"):
        wbits = zlib.MAX_WBITS if encoding == "deflate" else 47
        return _Frames(lambda: zlib.decompressobj(wbits))
    if encoding == "zstd":
        return _Frames(_zstd().ZstdDecompressor)
    if encoding == "lz4":
        import lz4.frame

        return _Frames(lz4.frame.LZ4FrameDecompressor)
    if encoding == "br":
        try:
            import brotli
        except ImportError:
            raise ClickHouseError(1001, "Content-Encoding br needs the brotli package on the server") from None
        return brotli.Decompressor().process
    raise ClickHouseError(36, f"Unknown Content-Encoding {encoding!r}", "BAD_ARGUMENTS")


@dataclass
class _Compressor:
    encoding: str
    compress: Callable[[bytes], bytes]
    flush: Callable[[], bytes]


class _Lz4Frame:
    """An LZ4 frame written incrementally (the frame header goes out with the first bytes)."""

    def __init__(self) -> None:
        import lz4.frame

        self.frame = lz4.frame.LZ4FrameCompressor()
        self.head = self.frame.begin()

    def _take_head(self) -> bytes:
        head, self.head = self.head, b""
        return head

    def compress(self, data: bytes) -> bytes:
        return self._take_head() + self.frame.compress(data)

    def flush(self) -> bytes:
        return self._take_head() + self.frame.flush()


def _compressor(accept: str) -> _Compressor | None:
    """The first Accept-Encoding the client lists that this server can produce."""
    for item in accept.split(","):
        name = item.split(";")[0].strip().lower()
        if name in ("gzip", "deflate"):
            obj = zlib.compressobj(1, zlib.DEFLATED, 31 if name == "gzip" else zlib.MAX_WBITS)
            return _Compressor(name, obj.compress, obj.flush)
        if name == "zstd":
            zobj = _zstd().ZstdCompressor(level=1)
            return _Compressor(name, zobj.compress, zobj.flush)
        if name == "lz4":
            framed = _Lz4Frame()
            return _Compressor(name, framed.compress, framed.flush)
    return None


# --- the chDB connection pool -----------------------------------------------------------------


@dataclass
class _Connection:
    """One chDB connection and the session state this server set on it (database, settings)."""

    conn: Any
    database: str = ""
    settings: dict[str, str] = field(default_factory=dict)

    def run(self, sql: str, fmt: str = "TabSeparated", params: dict[str, str] | None = None) -> Any:
        try:
            return self.conn.query(sql, fmt, params=params or {})
        except Exception as exc:  # chDB raises its own error types with ClickHouse's text
            raise ClickHouseError.from_engine(exc) from None

    def execute(self, query: _Query) -> Any:
        """Run a query and return chDB's whole result (one thread hop for the whole request)."""
        self.prepare(query.database, query.settings)
        return self.run(query.sql, query.fmt, query.params)

    def begin_stream(self, query: _Query) -> tuple[Any, bytes, bool]:
        """Start a streamed query and read its first blocks (up to STREAM_BUFFER bytes).

        Returns the stream, what was read, and whether that was all: a small result then goes
        out as one plain response, and an early error gets its HTTP status.
        """
        self.prepare(query.database, query.settings)
        try:
            streaming = self.conn.send_query(query.sql, query.fmt, params=query.params)
            head = bytearray()
            while len(head) < STREAM_BUFFER:
                block = _fetch(streaming)
                if not block:
                    streaming.close()
                    return streaming, bytes(head), True
                head += block
            return streaming, bytes(head), False
        except Exception as exc:
            raise ClickHouseError.from_engine(exc) from None

    def insert(self, query: _Query, data: bytes) -> Any:
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

    def begin_insert(self, query: _Query) -> Any:
        """Open chDB's streaming insert for `INSERT ...` (its FORMAT split off into the query)."""
        self.prepare(query.database, query.settings)
        try:
            return self.conn.send_insert(query.sql, query.insert_format)
        except Exception as exc:
            raise ClickHouseError.from_engine(exc) from None

    def prepare(self, database: str, settings: dict[str, str]) -> None:
        """Bring the connection to the request's database and settings, changing only what differs."""
        try:
            if database != self.database:
                self.run(f"USE {_quote_identifier(database)}")
                self.database = database
            for name in [n for n in self.settings if n not in settings]:
                self.run(f"SET {name} = DEFAULT")
                del self.settings[name]
            for name, value in settings.items():
                if self.settings.get(name) != value:
                    self.run(f"SET {name} = {_quote_string(value)}")
                    self.settings[name] = value
        except ClickHouseError:
            self.database, self.settings = "", {}  # unknown state: reset everything on next use
            for name in list(settings):
                with contextlib.suppress(ClickHouseError):
                    self.run(f"SET {name} = DEFAULT")
            raise


class Pool:
    """A bounded set of chDB connections to one directory; a request waits for a free one."""

    def __init__(self, path: Path, size: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.size = size
        self.free = [_Connection(chdb.connect(str(path))) for _ in range(size)]
        self.available = asyncio.Semaphore(size)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[_Connection]:
        await self.available.acquire()
        conn = self.free.pop()
        try:
            yield conn
        finally:
            self.free.append(conn)
            self.available.release()

    def close(self) -> None:
        for conn in self.free:
            with contextlib.suppress(Exception):
                conn.conn.close()


def _quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _quote_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# --- one request -------------------------------------------------------------------------------


@dataclass
class _Query:
    """What a request asks for, parsed from its URL, headers and body head."""

    sql: str
    fmt: str
    database: str
    settings: dict[str, str]
    params: dict[str, str]
    query_id: str
    insert_format: str = ""  # set when the body (after `head`) is the data of an INSERT
    head: bytes = b""


class Server:
    """The HTTP handlers over a pool of chDB connections."""

    def __init__(self, path: Path, password: str, pool_size: int, version: str = "") -> None:
        self.path = path
        self.password = password
        self.pool = Pool(path, pool_size)
        # engine calls run here: one thread per pooled connection plus streams being written out
        self.executor = concurrent.futures.ThreadPoolExecutor(pool_size * 2, thread_name_prefix="chdb")
        self.version = version
        self.timezone = "UTC"
        self.display_name = "nova-local"

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A blocking engine call on the server's threads (chDB releases the GIL while it works)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def start(self) -> None:
        async with self.pool.connection() as conn:
            row = await self.run(conn.run, "SELECT version(), timezone()")
        self.version, self.timezone = row.bytes().decode().strip().split("\t")

    # --- authentication ---

    def _authenticate(self, request: Request) -> None:
        user, password = request.query_params.get("user"), request.query_params.get("password")
        if request.headers.get("x-clickhouse-user") is not None:
            user, password = request.headers.get("x-clickhouse-user"), request.headers.get("x-clickhouse-key", "")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(auth[6:].strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                user, password = "", ""
        user = user or USER
        ok = user == USER and hmac.compare_digest((password or "").encode(), self.password.encode())
        if not ok:
            raise ClickHouseError(
                516,
                f"{user}: Authentication failed: password is incorrect, or there is no user with such name",
                "AUTHENTICATION_FAILED",
            )

    # --- parsing ---

    def _parse(
        self, request: Request, body_head: bytes, body_is_data: bool, form: list[tuple[str, str]] | None = None
    ) -> _Query:
        args = MultiDict([*request.query_params.multi_items(), *(form or [])])
        text = args.get("query", "")
        insert_format = ""
        head = b""
        if body_head and not body_is_data:
            match = INSERT_HEAD.match(body_head) if not text else None
            if match is not None:  # INSERT ... FORMAT X in the body, its data after it
                text = body_head[: match.start(1) - len("FORMAT ")].decode("utf-8", "replace").rstrip()
                text = re.sub(r"\s+FORMAT\s*$", "", text, flags=re.IGNORECASE)
                insert_format = match.group(1).decode()
                head = body_head[match.end() :]
            else:
                text += body_head.decode("utf-8", "replace")
        elif body_is_data:
            match = TRAILING_FORMAT.search(text)
            if match is None:
                raise ClickHouseError(62, "INSERT with data in the body needs a FORMAT clause", "SYNTAX_ERROR")
            insert_format = match.group(1)
            text = text[: match.start()].rstrip()
        if not text.strip():
            raise ClickHouseError(62, "Empty query", "SYNTAX_ERROR")
        fmt = args.get("default_format") or "TabSeparated"
        if not insert_format:
            match = TRAILING_FORMAT.search(text)
            if match is not None:
                fmt = match.group(1)
                text = text[: match.start()].rstrip().rstrip(";")
        settings: dict[str, str] = {}
        params: dict[str, str] = {}
        for name, value in args.multi_items():
            if name.startswith("param_"):
                params[name[6:]] = value
            elif name not in TRANSPORT_PARAMS:
                if not SETTING_NAME.match(name):
                    raise ClickHouseError(115, f"Unknown setting '{name}'", "UNKNOWN_SETTING")
                settings[name] = value
        return _Query(
            sql=text,
            fmt=fmt,
            database=args.get("database") or request.headers.get("x-clickhouse-database") or "default",
            settings=settings,
            params=params,
            query_id=args.get("query_id") or str(uuid.uuid4()),
            insert_format=insert_format,
            head=head,
        )

    def _headers(self, query: _Query, fmt: str, summary: dict[str, int] | None = None) -> dict[str, str]:
        numbers = {
            "read_rows": 0, "read_bytes": 0, "written_rows": 0, "written_bytes": 0,
            "total_rows_to_read": 0, "result_rows": 0, "result_bytes": 0, "elapsed_ns": 0,
        }  # fmt: skip
        numbers.update(summary or {})
        return {
            "X-ClickHouse-Server-Display-Name": self.display_name,
            "X-ClickHouse-Query-Id": query.query_id,
            "X-ClickHouse-Format": fmt,
            "X-ClickHouse-Timezone": self.timezone,
            "X-ClickHouse-Summary": orjson.dumps({k: str(v) for k, v in numbers.items()}).decode(),
            "Content-Type": CONTENT_TYPES.get(fmt.lower(), "application/octet-stream"),
        }

    def _error(self, exc: ClickHouseError, query_id: str = "") -> Response:
        text = str(exc)
        if "(version " not in text:
            text = f"{text} (version {self.version})"
        headers = {"X-ClickHouse-Exception-Code": str(exc.code), "X-ClickHouse-Server-Display-Name": self.display_name}
        if query_id:
            headers["X-ClickHouse-Query-Id"] = query_id
        return PlainTextResponse(text + "\n", status_code=exc.status, headers=headers)

    # --- handlers ---

    async def ping(self, request: Request) -> Response:
        return PlainTextResponse("Ok.\n")

    async def root(self, request: Request) -> Response:
        if request.method == "GET" and "query" not in request.query_params:
            return PlainTextResponse("Ok.\n")
        query_id = request.query_params.get("query_id", "")
        try:
            self._authenticate(request)
            return await self._execute(request)
        except ClickHouseError as exc:
            if exc.code != 516:
                log.info("query %s failed: %s", query_id, str(exc).splitlines()[0][:300])
            return self._error(exc, query_id)

    async def _execute(self, request: Request) -> Response:
        decompress = _decompressor(request.headers.get("content-encoding", ""))
        stream = request.stream()
        if request.method == "POST" and request.headers.get("content-type", "").startswith(FORM_TYPES):
            return await self._execute_form(request)
        has_query_param = "query" in request.query_params
        first = b""
        if request.method == "POST":
            first = await self._read_head(stream, decompress, 0 if has_query_param else 1 << 16)
        body_is_data = has_query_param and bool(first) and _is_insert(request.query_params["query"])
        query = self._parse(request, first, body_is_data)
        if query.insert_format:
            data = first if body_is_data else query.head
            return await self._insert(query, data, stream, decompress)
        if request.method == "POST":
            rest = await self._read_all(stream, decompress)
            if rest:  # a long query: parse again with the whole body
                query = self._parse(request, first + rest, False)
        return await self._answer(request, query)

    async def _execute_form(self, request: Request) -> Response:
        """The query and its parameters as form fields (clickhouse-connect sends long parameters so)."""
        form = await request.form(max_part_size=MAX_FORM_PART)
        fields: list[tuple[str, str]] = []
        for name, value in form.multi_items():
            if not isinstance(value, str):
                raise ClickHouseError(48, "external tables (form files) are not supported here", "NOT_IMPLEMENTED")
            fields.append((name, value))
        return await self._answer(request, self._parse(request, b"", False, fields))

    async def _answer(self, request: Request, query: _Query) -> Response:
        """Run a query that is not an insert with data, compressed as the client asked."""
        statement = _statement(query.sql)
        if request.method == "GET" and statement in WRITE_STATEMENTS:
            raise ClickHouseError(164, "Cannot execute query in readonly mode: a GET request only reads", "READONLY")
        if statement in ("set", "use"):  # no sessions: affects nothing after this request
            return Response(b"", headers=self._headers(query, query.fmt))
        compressor = None
        if request.query_params.get("enable_http_compression") in ("1", "true"):
            compressor = _compressor(request.headers.get("accept-encoding", ""))
        return await self._select(query, compressor)

    async def _read_head(
        self, stream: AsyncIterator[bytes], decompress: Callable[[bytes], bytes] | None, size: int
    ) -> bytes:
        """The body's first bytes (at least `size` when it has them; one chunk when size is 0)."""
        out = bytearray()
        async for chunk in stream:
            out += decompress(chunk) if decompress else chunk
            if len(out) >= size:
                break
        return bytes(out)

    async def _read_all(self, stream: AsyncIterator[bytes], decompress: Callable[[bytes], bytes] | None) -> bytes:
        out = bytearray()
        async for chunk in stream:
            out += decompress(chunk) if decompress else chunk
        return bytes(out)

    async def _insert(
        self,
        query: _Query,
        first: bytes,
        stream: AsyncIterator[bytes],
        decompress: Callable[[bytes], bytes] | None,
    ) -> Response:
        started = time.perf_counter()
        # the body up to INSERT_CHUNK is read first: a typical insert is then one engine call
        pending = bytearray(first)
        more = True
        while len(pending) < INSERT_CHUNK:
            chunk = await anext(stream, None)
            if chunk is None:
                more = False
                break
            pending += decompress(chunk) if decompress else chunk
        async with self.pool.connection() as conn:
            if not more:
                result = await self.run(conn.insert, query, bytes(pending))
            else:  # a large body streams into chDB chunk by chunk, in constant memory
                inserter = await self.run(conn.begin_insert, query)
                try:
                    async for chunk in stream:
                        pending += decompress(chunk) if decompress else chunk
                        if len(pending) >= INSERT_CHUNK:
                            await self.run(inserter.append, bytes(pending))
                            pending.clear()
                    if pending:
                        await self.run(inserter.append, bytes(pending))
                    result = await self.run(inserter.finish)
                except Exception as exc:
                    with contextlib.suppress(Exception):
                        inserter.cancel()
                    raise ClickHouseError.from_engine(exc) from None
        summary = {
            "written_rows": result.rows_written,
            "written_bytes": result.bytes_written,
            "elapsed_ns": int((time.perf_counter() - started) * 1e9),
        }
        return Response(b"", headers=self._headers(query, query.insert_format, summary))

    async def _select(self, query: _Query, compressor: _Compressor | None) -> Response:
        started = time.perf_counter()
        if query.fmt.lower() not in STREAMABLE or _statement(query.sql) not in ("select", "with"):
            async with self.pool.connection() as conn:
                result = await self.run(conn.execute, query)
            body = result.bytes()
            summary = {
                "read_rows": result.rows_read(),
                "read_bytes": result.bytes_read(),
                "result_bytes": len(body),
                "elapsed_ns": int((time.perf_counter() - started) * 1e9),
            }
            headers = self._headers(query, query.fmt, summary)
            if compressor is not None:
                body = compressor.compress(body) + compressor.flush()
                headers["Content-Encoding"] = compressor.encoding
            return Response(body, headers=headers)
        # streamed: the first block is fetched before answering, so an early error gets its status
        pool_cm = self.pool.connection()
        conn = await pool_cm.__aenter__()
        try:
            streaming, first, complete = await self.run(conn.begin_stream, query)
        except BaseException:
            await pool_cm.__aexit__(None, None, None)
            raise
        if complete:
            await pool_cm.__aexit__(None, None, None)
            summary = {"result_bytes": len(first), "elapsed_ns": int((time.perf_counter() - started) * 1e9)}
            headers = self._headers(query, query.fmt, summary)
            if compressor is not None:
                first = compressor.compress(first) + compressor.flush()
                headers["Content-Encoding"] = compressor.encoding
            return Response(first, headers=headers)
        tag = secrets.token_hex(8)
        headers = self._headers(query, query.fmt)
        headers["X-ClickHouse-Exception-Tag"] = tag
        if compressor is not None:
            headers["Content-Encoding"] = compressor.encoding

        async def body() -> AsyncIterator[bytes]:
            try:
                chunk = first
                while chunk:
                    yield compressor.compress(chunk) if compressor else chunk
                    try:
                        chunk = await self.run(_fetch, streaming)
                    except Exception as exc:  # mid-stream: ClickHouse's tagged exception block
                        error = ClickHouseError.from_engine(exc)
                        log.info("query %s failed while streaming: %s", query.query_id, str(error)[:300])
                        text = f"__exception__\r\n{tag}\r\n{error}\n{len(str(error))} {tag}\r\n__exception__\r\n"
                        yield compressor.compress(text.encode()) if compressor else text.encode()
                        break
                if compressor is not None:
                    yield compressor.flush()
            finally:
                with contextlib.suppress(Exception):
                    await self.run(streaming.close)
                await pool_cm.__aexit__(None, None, None)

        return StreamingResponse(body(), headers=headers)


def _fetch(streaming: Any) -> bytes:
    """The next block of a streaming result as bytes (b"" at the end)."""
    chunk = streaming.fetch()
    if chunk is None:
        return b""
    data = chunk.bytes() if hasattr(chunk, "bytes") else chunk
    return bytes(data) if data else b""


def _statement(sql: str) -> str:
    match = FIRST_WORD.match(sql)
    return match.group(1).lower() if match else ""


def _is_insert(sql: str) -> bool:
    return _statement(sql) == "insert"


def build_app(server: Server) -> Starlette:
    routes = [
        Route("/ping", server.ping, methods=["GET", "HEAD"]),
        Route("/replicas_status", server.ping, methods=["GET"]),
        Route("/", server.root, methods=["GET", "POST"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await server.start()
        yield

    return Starlette(routes=routes, lifespan=lifespan)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", required=True, type=Path, help="chDB data directory this process owns")
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--pool", type=int, default=8, help="chDB connections (concurrent queries)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    import uvicorn

    directory = args.path.resolve()
    server = Server(directory, password_for(directory), args.pool)
    info = {"url": f"http://{args.host}:{args.port}", "pid": os.getpid(), "pool": args.pool}
    (directory / SERVER_FILE).write_bytes(orjson.dumps(info))
    log.info("ClickHouse HTTP on %s over chDB at %s (%d connections)", info["url"], directory, args.pool)
    try:  # uvicorn stops gracefully on SIGTERM and SIGINT
        uvicorn.run(
            build_app(server),
            host=args.host,
            port=args.port,
            log_level="warning",
            access_log=False,
            timeout_keep_alive=60,
            lifespan="on",
        )
    except KeyboardInterrupt:
        pass
    finally:
        (directory / SERVER_FILE).unlink(missing_ok=True)
        server.pool.close()


if __name__ == "__main__":
    main()
