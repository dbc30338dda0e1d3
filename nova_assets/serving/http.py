"""`nova serve`: GET /feed/{user_id}?limit&offset (JSON), GET /metrics (Prometheus), GET /healthz.

The standard library's threading HTTP server is enough for a local read path and its tests; a
production deployment would put the same FeedService behind its own web framework.
"""

from __future__ import annotations

import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from nova_assets.serving.feed import FeedService, InvalidRequest


def make_server(service: FeedService, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections

        def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: HTTPStatus, message: str) -> None:
            self._send(status, orjson.dumps({"error": message, "status": int(status)}))

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            parts = [p for p in url.path.split("/") if p]
            if parts == ["metrics"]:
                self._send(HTTPStatus.OK, generate_latest(service.metrics.registry), CONTENT_TYPE_LATEST)
            elif parts == ["healthz"]:
                self._send(HTTPStatus.OK, b'{"ok":true}')
            elif len(parts) == 2 and parts[0] == "feed":
                query = parse_qs(url.query)
                try:
                    limit = _int(query, "limit", 20)
                    offset = _int(query, "offset", 0)
                    page = service.get_feed(parts[1], limit=limit, offset=offset)
                except InvalidRequest as exc:
                    self._error(HTTPStatus.BAD_REQUEST, str(exc))
                    return
                except Exception as exc:  # never a stack trace to the client; the log has it
                    self.log_error("feed failed: %s", exc)
                    self._error(HTTPStatus.SERVICE_UNAVAILABLE, "feed temporarily unavailable")
                    return
                self._send(HTTPStatus.OK, page.to_json())
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no route for {url.path}; try /feed/<user_id>, /metrics")

        def log_message(self, format: str, *args: object) -> None:  # quiet access log
            return

    return ThreadingHTTPServer((host, port), Handler)


def _int(query: dict[str, list[str]], name: str, default: int) -> int:
    values = query.get(name)
    if not values:
        return default
    try:
        return int(values[0])
    except ValueError:
        raise InvalidRequest(f"{name}={values[0]!r} is not an integer") from None


def serve_in_thread(service: FeedService, port: int) -> tuple[ThreadingHTTPServer, threading.Thread]:
    server = make_server(service, port)
    thread = threading.Thread(target=server.serve_forever, name="nova-serve", daemon=True)
    thread.start()
    return server, thread
