"""`nova serve`: GET /feed/{user_id}?limit&offset (JSON), GET /metrics (Prometheus), GET /healthz.

HTTP is uvicorn (httptools' llhttp parser, uvloop) with a raw ASGI app, not hand-parsed. A few
limits uvicorn does not have are added on its protocol, so the front holds against hostile
clients: a connection cap, a deadline for each request head (a client trickling bytes is cut
off), a head size limit (431), and no request bodies at all (only GET is served: a body,
`Transfer-Encoding` or a non-GET method is refused and the connection closed before any body
byte is read or buffered, so bytes that were a body never become a second request). llhttp
refuses malformed or conflicting `Content-Length` with a 400. Idle keep-alive connections close
after `keep_alive_s`.

The event loop never waits on Redis or ClickHouse: hits in L1 are answered on the loop, Redis is
read on the loop with an asyncio client, misses go to the FeedService's coalescing ClickHouse
thread, with time-outs (a stalled Redis is skipped after `redis_wait_s`, ClickHouse answers).
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

import orjson
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from nova_assets.serving.feed import FeedPage, FeedService
from nova_assets.serving.pages import InvalidRequest, fast_page

SWITCH_INTERVAL_S = 0.001


@dataclass(frozen=True)
class Limits:
    """What one client may hold; defaults sized for a 2-core host behind a load balancer."""

    max_connections: int = 1_024
    head_timeout_s: float = 5.0  # from connect (or the previous response) to a complete request head
    keep_alive_s: float = 5.0  # idle keep-alive connections are closed after this
    max_head_bytes: int = 16_384
    redis_wait_s: float = 0.25  # a Redis slower than this is skipped: ClickHouse answers instead


def _raw_response(status: HTTPStatus, message: str) -> bytes:
    body = orjson.dumps({"error": message, "status": int(status)})
    return (
        f"HTTP/1.1 {int(status)} {status.phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


class _GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a connection cap, a head deadline and size limit, and no
    bodies; feeds held in memory are answered by the protocol itself (`_answer_from_memory`)."""

    limits: Limits = Limits()
    service: FeedService | None = None

    # asyncio.Transport, as uvicorn's own protocol declares it (narrower than BaseProtocol's BaseTransport)
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._refused = False
        self._answered = False
        self._head_bytes = 0
        self._in_head = True
        self._head_timer: asyncio.TimerHandle | None = None
        if len(self.connections) > self.limits.max_connections:
            self._refuse(HTTPStatus.SERVICE_UNAVAILABLE, "too many connections")
            return
        self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.limits.head_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self._refuse(HTTPStatus.REQUEST_TIMEOUT, "request head not received in time")

    def _refuse(self, status: HTTPStatus, message: str) -> None:
        """Answer once and close: nothing after this on the connection is read as a request."""
        self._refused = True
        self._cancel_head_timer()
        if not self.transport.is_closing():
            self.transport.write(_raw_response(status, message))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_head_bytes:
                self._refuse(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large")
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        if not self._refused:
            super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        if not self._refused:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._refused:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._in_head = False
        self._head_bytes = 0
        self._cancel_head_timer()
        method = self.parser.get_method()
        if method != b"GET":
            self._refuse(HTTPStatus.METHOD_NOT_ALLOWED, f"{method.decode('latin-1')} is not supported; use GET")
            return
        for name, value in self.headers:
            if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
                self._refuse(HTTPStatus.BAD_REQUEST, "a GET request has no body")
                return
        if self._answer_from_memory():
            return
        super().on_headers_complete()

    def _answer_from_memory(self) -> bool:
        """A feed this process holds (L1, or trending for a known cold id), answered here.

        Most reads are these: written from the parser's callback, without uvicorn's ASGI cycle (a
        scope, a task, two `send`s) or the async read chain, each of which cost more CPU than the
        answer itself. Anything else (another path, a malformed id or page, a feed not in memory,
        a response still owed on this connection) goes the ASGI way.
        """
        service = self.service
        if service is None or self.pipeline or self.parser.should_upgrade():
            return False
        if self.cycle is not None and not self.cycle.response_complete:  # answers go out in order
            return False
        target = self.url
        if not target.startswith(b"/feed/"):
            return False
        path, _, query = target[6:].partition(b"?")
        page = fast_page(query)
        if page is None or len(path) != 36:  # a canonical UUID; others take the full path's checks
            return False
        started = time.perf_counter()
        user = path.decode("latin-1").lower()
        try:
            found = service.local(user)
            if found is None:
                return False
            body = service.page(user, *found, page[0], page[1], started).to_json()
        except Exception:  # never here: the ASGI way answers it (503 at worst), never a dropped connection
            return False
        keep_alive = self.parser.should_keep_alive()
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s"
            % (len(body), b"" if keep_alive else b"connection: close\r\n", body)
        )
        self._answered = True
        if keep_alive:
            self.on_response_complete()  # as after an ASGI response: keep-alive and head timers
        else:
            self.server_state.total_requests += 1
            self.transport.close()
        return True

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._answered:  # answered from memory in on_headers_complete: no ASGI cycle to finish
            self._answered = False
        elif not self._refused:
            super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._in_head = True
            self._head_bytes = 0
            self._arm_head_timer()  # the next head must be complete in time, however slowly it trickles


def _error(status: HTTPStatus, message: str) -> tuple[int, bytes, bytes]:
    return int(status), orjson.dumps({"error": message, "status": int(status)}), b"application/json"


def _int(query: dict[str, list[str]], name: str, default: int) -> int:
    values = query.get(name)
    if not values:
        return default
    try:
        return int(values[0])
    except ValueError:
        raise InvalidRequest(f"{name}={values[0]!r} is not an integer") from None


class FeedServer:
    """The HTTP front of a FeedService (an ASGI app served by uvicorn)."""

    def __init__(self, service: FeedService, port: int, host: str = "127.0.0.1", limits: Limits | None = None) -> None:
        self.service, self.port, self.host = service, port, host
        self.limits = limits or Limits()
        protocol = type("FeedProtocol", (_GuardedProtocol,), {"limits": self.limits, "service": service})
        self.config = uvicorn.Config(
            self.app,
            host=host,
            port=port,
            http=protocol,
            loop="auto",  # uvloop when installed (uvicorn[standard])
            lifespan="on",
            interface="asgi3",
            proxy_headers=False,
            log_level="error",  # a warning per malformed request would let clients flood the log
            access_log=False,
            timeout_keep_alive=int(self.limits.keep_alive_s),
            backlog=2048,
            server_header=False,
            date_header=False,
        )
        self.server = uvicorn.Server(self.config)

    async def _feed(self, user_id: str, query_string: bytes) -> FeedPage:
        """The service's read chain, Redis skipped when slower than `redis_wait_s`."""
        query = parse_qs(query_string.decode("latin-1"))
        limit, offset = _int(query, "limit", 20), _int(query, "offset", 0)
        return await self.service.feed(user_id, limit, offset, redis_wait_s=self.limits.redis_wait_s)

    async def _route(self, path: str, query_string: bytes) -> tuple[int, bytes, bytes]:
        if path == "/metrics":
            return 200, generate_latest(self.service.metrics.registry), CONTENT_TYPE_LATEST.encode()
        if path == "/healthz":
            return 200, b'{"ok":true}', b"application/json"
        parts = [p for p in path.split("/") if p]
        if len(parts) != 2 or parts[0] != "feed":
            return _error(HTTPStatus.NOT_FOUND, f"no route for {path[:200]}; try /feed/<user_id>, /metrics")
        try:
            page = await self._feed(parts[1], query_string)
        except InvalidRequest as exc:
            return _error(HTTPStatus.BAD_REQUEST, str(exc))
        except Exception:  # never a stack trace to the client
            return _error(HTTPStatus.SERVICE_UNAVAILABLE, "feed temporarily unavailable")
        return 200, page.to_json(), b"application/json"

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        status, body, ctype = await self._route(scope["path"], scope["query_string"])
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", ctype), (b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # The process's startup heap (dagster and friends: ~10^6 objects) is moved out of
                # the collector's reach: a full collection walking it stalled requests ~100 ms.
                await asyncio.get_running_loop().run_in_executor(None, self.service.prime)
                await self.service.bind_loop()
                gc.collect()
                gc.freeze()
                # a hit waits for the GIL whenever a cache thread (Redis reads and writes, a miss's
                # decoding) holds it: at most 1 ms instead of CPython's 5 ms
                sys.setswitchinterval(SWITCH_INTERVAL_S)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.service.unbind_loop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def serve_forever(self) -> None:
        """Serve until SIGINT/SIGTERM (in the main thread) or `shutdown()`."""
        self.server.run()

    def start_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="nova-serve", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self.server.started:
            raise RuntimeError(f"nova serve did not start on {self.host}:{self.port} (port taken?)")
        return thread

    def shutdown(self) -> None:
        self.server.should_exit = True


def make_server(service: FeedService, port: int, host: str = "127.0.0.1", limits: Limits | None = None) -> FeedServer:
    return FeedServer(service, port, host, limits)


def serve_in_thread(
    service: FeedService, port: int, limits: Limits | None = None
) -> tuple[FeedServer, threading.Thread]:
    server = FeedServer(service, port, limits=limits)
    return server, server.start_in_thread()
