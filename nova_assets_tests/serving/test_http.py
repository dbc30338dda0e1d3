"""`nova serve`'s HTTP front: feeds held in memory are answered by the protocol itself, and every
other request still takes uvicorn's ASGI way, in order, on the same connection."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from nova_assets.core.process import free_port
from nova_assets.core.recommendations.scoring import ScoringParams, recompute
from nova_assets.resources import RedisResource
from nova_assets.serving import FeedService
from nova_assets.serving.http import FeedServer
from nova_assets.serving.pages import fast_page
from nova_assets_tests.world import World

Served = tuple[FeedService, int, list[str]]


@pytest.fixture
def served(world: World, redis_resource: RedisResource) -> Iterator[Served]:
    """A FeedService behind a real server on a free port, and the paths its ASGI app was asked for."""
    with world.ch.session() as client:
        recompute(client, ScoringParams(feed_size=30))
    service = FeedService(world.ch, redis_resource.client(), stats_flush_s=0.1)
    server = FeedServer(service, free_port())
    asked: list[str] = []
    app = server.config.app

    async def counting(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            asked.append(scope["path"])
        await app(scope, receive, send)

    server.config.app = counting
    server.start_in_thread()
    try:
        yield service, server.port, asked
    finally:
        server.shutdown()
        service.close()


def _responses(sock: socket.socket, n: int) -> list[tuple[bytes, dict[str, Any]]]:
    """`n` responses read off one connection: each head and its JSON body."""
    buffer, out = b"", []
    while len(out) < n:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(out)} responses"
            buffer += chunk
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        length = int(
            next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        )
        while len(buffer) < length:
            buffer += sock.recv(65536)
        out.append((head, orjson.loads(buffer[:length])))
        buffer = buffer[length:]
    return out


def test_a_feed_in_memory_is_answered_without_the_asgi_app(served: Served, world: World) -> None:
    service, port, asked = served
    user, other = str(world.users[3]), str(world.users[4])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /feed/%s?limit=5 HTTP/1.1\r\nHost: x\r\n\r\n" % user.encode())
        ((_, first),) = _responses(sock, 1)
        assert first["source"] == "clickhouse" and asked == [f"/feed/{user}"]
        # pipelined: a hit, a miss (ASGI), a hit with a page, a malformed page (ASGI's 400): in order
        sock.sendall(
            b"GET /feed/%s?limit=5 HTTP/1.1\r\nHost: x\r\n\r\n" % user.encode()
            + b"GET /feed/%s HTTP/1.1\r\nHost: x\r\n\r\n" % other.encode()
            + b"GET /feed/%s?offset=2&limit=3 HTTP/1.1\r\nHost: x\r\n\r\n" % user.upper().encode()
            + b"GET /feed/%s?limit=999 HTTP/1.1\r\nHost: x\r\n\r\n" % user.encode()
        )
        (head, hit), (_, miss), (_, page), (bad_head, bad) = _responses(sock, 4)
        sock.sendall(b"GET /feed/%s?limit=2 HTTP/1.1\r\nHost: x\r\n\r\n" % user.encode())
        ((_, again),) = _responses(sock, 1)
    assert head.startswith(b"HTTP/1.1 200 OK") and b"content-type: application/json" in head
    assert hit["source"] == "l1" and hit["posts"] == first["posts"] and hit["total"] == first["total"]
    assert miss["user_id"] == other and miss["source"] == "clickhouse"
    assert page["source"] == "l1" and page["posts"] == first["posts"][2:5]
    assert bad_head.startswith(b"HTTP/1.1 400") and "limit" in bad["error"]
    assert again["source"] == "l1" and again["posts"] == first["posts"][:2]
    # the ASGI app saw the first read, the miss, and what queued behind the miss (a page held in
    # memory too, answered after the miss, not before it); not the hits on an idle connection
    assert asked == [f"/feed/{user}", f"/feed/{other}", f"/feed/{user.upper()}", f"/feed/{user}"]
    assert service.metrics.hits.labels("feed", "l1")._value.get() == 3


def test_http_1_0_gets_its_answer_and_the_connection_closed(served: Served, world: World) -> None:
    service, port, asked = served
    user = str(world.users[5])
    service.get_feed(user)  # now in L1
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /feed/%s?limit=2 HTTP/1.0\r\n\r\n" % user.encode())
        ((head, body),) = _responses(sock, 1)
        assert sock.recv(100) == b""  # closed by the server
    assert b"connection: close" in head and body["source"] == "l1" and len(body["posts"]) == 2
    assert asked == []


@pytest.mark.parametrize(
    ("query", "page"),
    [
        (b"", (20, 0)),
        (b"limit=5", (5, 0)),
        (b"offset=3&limit=200", (200, 3)),
        (b"limit=0", None),
        (b"limit=201", None),
        (b"limit=-1", None),
        (b"limit=5&limit=6", None),
        (b"limit=abc", None),
        (b"limit", None),
        (b"cursor=x", None),
        (b"limit=%35", None),
    ],
)
def test_only_a_plain_valid_page_takes_the_fast_way(query: bytes, page: tuple[int, int] | None) -> None:
    assert fast_page(query) == page
