"""The HTTP handlers: ClickHouse's HTTP interface over the engine's chDB connections.

Every failure is answered as ClickHouse answers it (its code, the exception header, the HTTP
status), before the first byte of a result; after it, as ClickHouse's tagged in-band exception.
A request body the server stops reading early (a bad frame, a failed insert) is drained first, so
the client sees the error instead of a reset connection.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import hmac
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from nova_assets import settings
from nova_assets.stack.clickhouse_http import native
from nova_assets.stack.clickhouse_http.body import Body
from nova_assets.stack.clickhouse_http.compression import Compressor, compressor, decompressor
from nova_assets.stack.clickhouse_http.engine import FLUSH_AFTER, STREAM_BUFFER, Connection, Engine
from nova_assets.stack.clickhouse_http.errors import (
    AUTHENTICATION_FAILED,
    READONLY,
    STD_EXCEPTION,
    ClickHouseError,
)
from nova_assets.stack.clickhouse_http.protocol import (
    CONTENT_TYPES,
    STREAMABLE,
    TEMPORARY,
    WRITE_STATEMENTS,
    Query,
    has_result,
    is_insert,
    parse,
    parse_query_string,
    text,
)
from nova_assets.stack.clickhouse_http.requests import as_int, describe, malloc_trim, next_block, revision, structure
from nova_assets.stack.clickhouse_http.stats import QueryStats

log = logging.getLogger("nova.clickhouse")

MAX_FORM_PART = 256 << 20  # a form field may hold a long query or a large bound array
INSERT_CHUNK = 1 << 20  # bytes handed to chDB per append (fewer engine calls than per network read)
IDLE_TRIM_AFTER = 10.0  # seconds without a request before freed memory goes back to the OS


class Server:
    """The HTTP handlers over the engine's chDB connections."""

    def __init__(self, path: Path, password: str, pool_size: int, version: str = "", user: str = "default") -> None:
        self.path = path
        self.password = password
        self.user = user
        self.engine = Engine(path, pool_size)
        # engine calls run here: one thread per concurrent query plus streams being written out
        self.executor = concurrent.futures.ThreadPoolExecutor(pool_size * 2, thread_name_prefix="chdb")
        self.version = version
        self.timezone = "UTC"
        self.display_name = "nova-local"
        self.last_request = time.monotonic()
        self.in_flight = 0
        self.stats = QueryStats(settings.env_str(settings.CLICKHOUSE_QUERY_STATS))

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A blocking engine call on the server's threads (chDB releases the GIL while it works)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def start(self) -> None:
        async with self.engine.connection() as conn:
            row = await self.run(conn.run, "SELECT version(), timezone()")
        self.version, self.timezone = row.bytes().decode().strip().split("\t")

    async def housekeeping(self) -> None:
        """Expire idle sessions; after a quiet spell, hand freed memory back to the OS.

        Large results leave their buffers with the allocators (glibc's and chDB's jemalloc) after
        the request is gone; a server that idles between bursts should not keep its peak size.
        """
        trimmed = True
        while True:
            await asyncio.sleep(5)
            self.engine.expire()
            self.stats.maybe_flush()
            quiet = time.monotonic() - self.last_request > IDLE_TRIM_AFTER
            if not quiet:
                trimmed = False
            elif not trimmed and self.in_flight == 0:
                trimmed = True
                with contextlib.suppress(Exception):
                    async with self.engine.connection() as conn:
                        await self.run(conn.run, "SYSTEM JEMALLOC PURGE")
                malloc_trim()

    def _authenticate(self, request: Request, args: dict[str, bytes]) -> None:
        user = text(args["user"]) if "user" in args else None
        password = text(args["password"]) if "password" in args else None
        if request.headers.get("x-clickhouse-user") is not None:
            user, password = request.headers.get("x-clickhouse-user"), request.headers.get("x-clickhouse-key", "")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(auth[6:].strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                user, password = "", ""
        user = user or self.user
        ok = user == self.user and hmac.compare_digest((password or "").encode(), self.password.encode())
        if not ok:
            raise ClickHouseError(
                AUTHENTICATION_FAILED,
                f"{user}: Authentication failed: password is incorrect, or there is no user with such name",
                "AUTHENTICATION_FAILED",
            )

    def _headers(self, query: Query, fmt: str | None, summary: dict[str, int] | None = None) -> dict[str, str]:
        numbers = {
            "read_rows": 0, "read_bytes": 0, "written_rows": 0, "written_bytes": 0,
            "total_rows_to_read": 0, "result_rows": 0, "result_bytes": 0, "elapsed_ns": 0,
        }  # fmt: skip
        numbers.update(summary or {})
        headers = {
            "X-ClickHouse-Server-Display-Name": self.display_name,
            "X-ClickHouse-Query-Id": query.query_id,
            "X-ClickHouse-Timezone": self.timezone,
            "X-ClickHouse-Summary": orjson.dumps({k: str(v) for k, v in numbers.items()}).decode(),
        }
        if query.args.get("session_id"):
            headers["X-ClickHouse-Session-Id"] = query.args["session_id"]
        if fmt is not None:  # only a result set names its format; a command answers with its summary
            headers["X-ClickHouse-Format"] = fmt
            headers["Content-Type"] = CONTENT_TYPES.get(fmt.lower(), "application/octet-stream")
        else:
            headers["Content-Type"] = "text/plain; charset=UTF-8"
        return headers

    def _error(self, exc: ClickHouseError, query_id: str = "") -> Response:
        message = str(exc)
        if "(version " not in message:
            message = f"{message} (version {self.version})"
        headers = {"X-ClickHouse-Exception-Code": str(exc.code), "X-ClickHouse-Server-Display-Name": self.display_name}
        if query_id:
            headers["X-ClickHouse-Query-Id"] = query_id
        return PlainTextResponse(message + "\n", status_code=exc.status, headers=headers)

    # --- handlers ---

    async def ping(self, request: Request) -> Response:
        return PlainTextResponse("Ok.\n")

    async def root(self, request: Request) -> Response:
        raw_args = parse_query_string(request.scope.get("query_string", b""))
        args = dict(raw_args)
        if request.method == "GET" and "query" not in args:
            return PlainTextResponse("Ok.\n")
        query_id = text(args.get("query_id", b""))
        body: Body | None = None
        self.last_request = started = time.monotonic()
        self.in_flight += 1
        try:
            self._authenticate(request, args)
            body = Body(request, decompressor(request.headers.get("content-encoding", "")))
            return await self._execute(request, raw_args, body)
        except Exception as exc:
            error = ClickHouseError.from_engine(exc)
            if error.code == STD_EXCEPTION and not isinstance(exc, ClickHouseError):
                log.warning("query %s: unexpected %s: %s", query_id, type(exc).__name__, exc, exc_info=True)
            elif error.code != AUTHENTICATION_FAILED:
                log.info("query %s failed: %s", query_id, str(error).splitlines()[0][:300])
            if body is not None:
                await body.drain()
            else:
                with contextlib.suppress(Exception):
                    async for _ in request.stream():
                        pass
            return self._error(error, query_id)
        finally:
            self.stats.took(getattr(request.state, "shape", ""), time.monotonic() - started)
            self.in_flight -= 1  # a stream still being written holds its connection, not this count

    async def _execute(self, request: Request, args: list[tuple[str, bytes]], body: Body) -> Response:
        header_database = request.headers.get("x-clickhouse-database", "")
        if request.method == "POST" and request.headers.get("content-type", "").startswith("multipart/form-data"):
            return await self._execute_form(request, args, header_database)
        query_param = dict(args).get("query")
        first = b""
        if request.method == "POST":
            first = await body.head(0 if query_param is not None else 1 << 16)
        body_is_data = query_param is not None and bool(first) and is_insert(text(query_param))
        query = parse(args, first, body_is_data, header_database)
        request.state.shape = self.stats.record(query.sql, query.insert_format)
        if query.insert_format:
            return await self._insert(query, first if body_is_data else query.head, body)
        if request.method == "POST":
            rest = await body.rest()
            if rest:  # a long query: parse again with the whole body
                query = parse(args, first + rest, False, header_database)
        return await self._answer(request, query)

    async def _execute_form(self, request: Request, args: list[tuple[str, bytes]], header_database: str) -> Response:
        """A multipart form: the query and its parameters as fields, external tables as files."""
        form = await request.form(max_part_size=MAX_FORM_PART)
        fields: list[tuple[str, bytes]] = []
        files: list[tuple[str, bytes]] = []
        for name, value in form.multi_items():
            if isinstance(value, str):
                fields.append((name, value.encode()))
            else:
                files.append((name, await value.read()))
        all_args = [*args, *fields]
        values = {name: text(value) for name, value in all_args}
        reserved = frozenset(f"{name}_{suffix}" for name, _ in files for suffix in ("structure", "types", "format"))
        query = parse(all_args, b"", False, header_database, reserved)
        request.state.shape = self.stats.record(query.sql)
        external = [
            (name, structure(name, values), values.get(f"{name}_format", "TabSeparated"), data) for name, data in files
        ]
        return await self._answer(request, query, external)

    async def _answer(
        self, request: Request, query: Query, external: list[tuple[str, str, str, bytes]] | None = None
    ) -> Response:
        """Run a query that is not an insert with data, compressed as the client asked."""
        statement = query.statement
        if request.method == "GET" and statement in WRITE_STATEMENTS - {"set", "use"}:
            raise ClickHouseError(
                READONLY, "Cannot execute query in readonly mode: a GET request only reads", "READONLY"
            )
        if statement in ("set", "use"):
            if query.args.get("session_id"):
                async with self.engine.connection(query) as conn:
                    await self.run(conn.session_statement, query)
            # without a session ClickHouse forgets it with the request: nothing to keep
            return Response(b"", headers=self._headers(query, None))
        zipper = None
        if query.flag("enable_http_compression"):
            zipper = compressor(request.headers.get("accept-encoding", ""))
        return await self._select(query, zipper, external or [])

    async def _insert(self, query: Query, first: bytes, body: Body) -> Response:
        started = time.perf_counter()
        # the body up to INSERT_CHUNK is read first: a typical insert is then one engine call
        pending = bytearray(first)
        more = True
        while len(pending) < INSERT_CHUNK:
            chunk = await body.next()
            if chunk is None:
                more = False
                break
            pending += chunk
        isolated = TEMPORARY.search(query.sql) is not None
        async with self.engine.connection(query, isolated) as conn:
            if not more:
                result = await self.run(conn.insert, query, bytes(pending))
            else:  # a large body streams into chDB chunk by chunk, in constant memory
                inserter = await self.run(conn.begin_insert, query)
                try:
                    while (chunk := await body.next()) is not None:
                        pending += chunk
                        if len(pending) >= INSERT_CHUNK:
                            await self.run(inserter.append, bytes(pending))
                            pending.clear()
                    if pending:
                        await self.run(inserter.append, bytes(pending))
                    result = await self.run(inserter.finish)
                except BaseException as exc:
                    with contextlib.suppress(Exception):
                        inserter.cancel()
                    raise ClickHouseError.from_engine(exc) from None
        summary = {
            "written_rows": result.rows_written,
            "written_bytes": result.bytes_written,
            "elapsed_ns": int((time.perf_counter() - started) * 1e9),
        }
        return Response(b"", headers=self._headers(query, None, summary))

    async def _select(
        self, query: Query, zipper: Compressor | None, external: list[tuple[str, str, str, bytes]]
    ) -> Response:
        started = time.perf_counter()
        result_fmt = query.fmt if has_result(query.sql) else None
        protocol_revision = revision(query)
        transform = None
        if protocol_revision and query.fmt.lower() == "native":
            transform = native.transformer(protocol_revision, lambda: describe(self.engine, query))
        isolated = bool(external) or TEMPORARY.search(query.sql) is not None
        # chDB streams only SELECTs; a command's result is one small block
        streamed = query.statement in ("select", "with") and result_fmt is not None
        streamed = streamed and (transform is not None or query.fmt.lower() in STREAMABLE)
        lease = self.engine.connection(query, isolated)
        conn: Connection = await lease.__aenter__()
        try:
            for name, columns, fmt, data in external:
                await self.run(conn.load_external, query, name, columns, fmt, data)
            if not streamed or external:  # external tables go with the query: no stream outlives them
                try:
                    result = await self.run(conn.execute, query)
                finally:
                    if external and query.args.get("session_id"):
                        await self.run(conn.drop_external, [name for name, *_ in external])
                await lease.__aexit__(None, None, None)
                data = result.bytes()
                if transform is not None and data:
                    data = await self.run(transform, data)
                return self._whole(query, result_fmt, data, zipper, started, result)
            wait = query.flag("wait_end_of_query")
            buffer = 1 << 62 if wait else as_int(query.args.get("buffer_size"), STREAM_BUFFER)
            streaming, first, complete = await self.run(
                conn.begin_stream, query, buffer, None if wait else FLUSH_AFTER, transform
            )
        except BaseException:
            await lease.__aexit__(None, None, None)
            raise
        if complete:
            await lease.__aexit__(None, None, None)
            return self._whole(query, result_fmt, first, zipper, started)
        tag = secrets.token_hex(8)
        headers = self._headers(query, result_fmt)
        headers["X-ClickHouse-Exception-Tag"] = tag
        if zipper is not None:
            headers["Content-Encoding"] = zipper.encoding

        async def stream() -> AsyncIterator[bytes]:
            try:
                chunk = first
                while chunk:
                    yield zipper.compress(chunk) if zipper else chunk
                    try:
                        chunk = await self.run(next_block, streaming, transform)
                    except Exception as exc:  # mid-stream: ClickHouse's tagged exception block
                        error = ClickHouseError.from_engine(exc)
                        log.info("query %s failed while streaming: %s", query.query_id, str(error)[:300])
                        message = str(error)
                        block = f"__exception__\r\n{tag}\r\n{message}\n{len(message)} {tag}\r\n__exception__\r\n"
                        yield zipper.compress(block.encode()) if zipper else block.encode()
                        break
                if zipper is not None:
                    yield zipper.flush()
            finally:
                with contextlib.suppress(Exception):
                    await self.run(streaming.close)
                await lease.__aexit__(None, None, None)

        return StreamingResponse(stream(), headers=headers)

    def _whole(
        self,
        query: Query,
        fmt: str | None,
        body: bytes,
        zipper: Compressor | None,
        started: float,
        result: Any = None,
    ) -> Response:
        summary = {"result_bytes": len(body), "elapsed_ns": int((time.perf_counter() - started) * 1e9)}
        if result is not None:
            summary.update(read_rows=result.rows_read(), read_bytes=result.bytes_read())
        headers = self._headers(query, fmt, summary)
        if zipper is not None and body:
            body = zipper.compress(body) + zipper.flush()
            headers["Content-Encoding"] = zipper.encoding
        return Response(body, headers=headers)


def build_app(server: Server) -> Starlette:
    routes = [
        Route("/ping", server.ping, methods=["GET", "HEAD"]),
        Route("/replicas_status", server.ping, methods=["GET"]),
        Route("/", server.root, methods=["GET", "POST"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await server.start()
        reaper = asyncio.create_task(server.housekeeping())
        yield
        reaper.cancel()
        server.stats.maybe_flush(force=True)

    return Starlette(routes=routes, lifespan=lifespan)
