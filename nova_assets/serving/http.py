"""`nova serve`: GET /feed/{user_id}?limit&offset (JSON), GET /metrics (Prometheus), GET /healthz.

A small asyncio HTTP/1.1 server (keep-alive, no dependencies): cache hits are answered on the
event loop without a thread switch; a miss waits for the FeedService's loader thread, which
answers every miss waiting at that moment with one ClickHouse query, so misses never stall the
hits behind them nor queue behind each other. One loop instead of a thread per connection keeps
the latency tail short under many concurrent clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
from http import HTTPStatus
from urllib.parse import parse_qs, unquote, urlsplit

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from nova_assets.serving.feed import MISS_TIMEOUT_S, FeedService, InvalidRequest

MAX_HEADER_BYTES = 16_384


def _response(status: int, body: bytes, content_type: str = "application/json", keep_alive: bool = True) -> bytes:
    reason = HTTPStatus(status).phrase
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    return head.encode() + body


def _error(status: HTTPStatus, message: str) -> tuple[int, bytes, str]:
    return int(status), orjson.dumps({"error": message, "status": int(status)}), "application/json"


def _int(query: dict[str, list[str]], name: str, default: int) -> int:
    values = query.get(name)
    if not values:
        return default
    try:
        return int(values[0])
    except ValueError:
        raise InvalidRequest(f"{name}={values[0]!r} is not an integer") from None


class FeedServer:
    """The HTTP front of a FeedService."""

    def __init__(self, service: FeedService, port: int, host: str = "127.0.0.1") -> None:
        self.service, self.port, self.host = service, port, host
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: asyncio.AbstractServer | None = None

    async def _route(self, target: str) -> tuple[int, bytes, str]:
        url = urlsplit(target)
        parts = [unquote(p) for p in url.path.split("/") if p]
        if parts == ["metrics"]:
            return 200, generate_latest(self.service.metrics.registry), CONTENT_TYPE_LATEST
        if parts == ["healthz"]:
            return 200, b'{"ok":true}', "application/json"
        if len(parts) != 2 or parts[0] != "feed":
            return _error(HTTPStatus.NOT_FOUND, f"no route for {url.path}; try /feed/<user_id>, /metrics")
        try:
            query = parse_qs(url.query)
            limit, offset = _int(query, "limit", 20), _int(query, "offset", 0)
            started = time.perf_counter()
            page = self.service.get_feed_cached(parts[1], limit=limit, offset=offset)
            if page is None:
                later = self.service.get_feed_later(parts[1], limit, offset, started)
                page = await asyncio.wait_for(asyncio.wrap_future(later), MISS_TIMEOUT_S)
        except InvalidRequest as exc:
            return _error(HTTPStatus.BAD_REQUEST, str(exc))
        except Exception:  # never a stack trace to the client
            return _error(HTTPStatus.SERVICE_UNAVAILABLE, "feed temporarily unavailable")
        return 200, page.to_json(), "application/json"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                try:
                    method, target, version = lines[0].split(" ", 2)
                except ValueError:
                    writer.write(_response(400, b'{"error":"bad request line"}', keep_alive=False))
                    return
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                length = int(headers.get("content-length", "0") or 0)
                if length:
                    await reader.readexactly(length)
                keep_alive = headers.get("connection", "").lower() != "close" and version == "HTTP/1.1"
                if method != "GET":
                    status, body, ctype = _error(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} is not supported; use GET")
                else:
                    status, body, ctype = await self._route(target)
                writer.write(_response(status, body, ctype, keep_alive))
                await writer.drain()
                # readuntil() and drain() complete without yielding when data is already there, so
                # a busy keep-alive client could hold the loop; yield once per response (fairness)
                await asyncio.sleep(0)
                if not keep_alive:
                    return
        finally:
            writer.close()

    async def _serve(self, ready: threading.Event | None = None) -> None:
        # The process's startup heap (dagster and friends: ~10^6 objects) is moved out of the
        # collector's reach: a full collection walking it stalled requests ~100 ms (the miss P99).
        self.loop = asyncio.get_running_loop()
        await self.loop.run_in_executor(None, self.service.prime)
        gc.collect()
        gc.freeze()
        self.server = await asyncio.start_server(
            self._handle, self.host, self.port, limit=MAX_HEADER_BYTES, backlog=1024
        )
        if ready is not None:
            ready.set()
        async with self.server:
            await self.server.serve_forever()

    def serve_forever(self, ready: threading.Event | None = None) -> None:
        with contextlib.suppress(asyncio.CancelledError):  # shutdown() cancels serve_forever
            asyncio.run(self._serve(ready))

    def start_in_thread(self) -> threading.Thread:
        ready = threading.Event()
        thread = threading.Thread(target=self.serve_forever, args=(ready,), name="nova-serve", daemon=True)
        thread.start()
        ready.wait(10)
        return thread

    def shutdown(self) -> None:
        if self.loop is not None and self.server is not None:
            self.loop.call_soon_threadsafe(self.server.close)


def make_server(service: FeedService, port: int, host: str = "127.0.0.1") -> FeedServer:
    return FeedServer(service, port, host)


def serve_in_thread(service: FeedService, port: int) -> tuple[FeedServer, threading.Thread]:
    server = FeedServer(service, port)
    return server, server.start_in_thread()
