"""A real `nova serve` (subprocess) against slow, lying and abusive clients.

After each attack a normal request must still be answered within 1 s.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.client import HTTPConnection
from pathlib import Path

import orjson
import pytest

from nova_assets.core.cache.keys import STATS_PREFIX
from nova_assets.core.cache.warming import warm
from nova_assets.core.process import free_port
from nova_assets.core.recommendations.scoring import ScoringParams, recompute
from nova_assets.resources import RedisResource
from nova_assets.stack import Stack
from nova_assets_tests.world import World

HEAD_TIMEOUT_S = 2.0
MAX_CONNECTIONS = 400


@dataclass
class Serve:
    port: int
    proc: subprocess.Popen[bytes]
    world: World

    def rss_kb(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def get(self, path: str) -> tuple[int, dict]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
            return resp.status, orjson.loads(resp.read()) if path.startswith("/feed") else {}

    def assert_healthy(self) -> None:
        """A normal request is answered within 1 s."""
        started = time.monotonic()
        status, body = self.get(f"/feed/{self.world.users[0]}?limit=3")
        assert status == 200 and len(body["posts"]) == 3
        assert time.monotonic() - started < 1.0


def _exchange(serve: Serve, raw: bytes, wait_s: float = 3.0) -> bytes:
    """Send raw bytes; everything the server answers until it closes (or `wait_s` passes)."""
    with serve.connect() as sock:
        sock.sendall(raw)
        sock.settimeout(wait_s)
        received = b""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
        return received


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while chunk := sock.recv(4096):
            if not chunk:
                break
        return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


@pytest.fixture(scope="module")
def serve(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    # module-scoped world: the fixtures `world`/`redis_resource` are per test, so build them here
    from nova_assets.core.schema.ddl import apply_all
    from nova_assets.core.schema.sql_files import Renderer
    from nova_assets.resources import ClickHouseResource

    ch = ClickHouseResource(url=stack.env()["NOVA_CLICKHOUSE_URL"], database=f"test_{uuid.uuid4().hex[:12]}")
    with ch.session() as client:
        apply_all(client, Renderer(ch.database))
    world = World(ch)
    world.populate()
    redis_client = RedisResource(url=stack.env()["NOVA_REDIS_URL"]).client()
    redis_client.flushdb()
    with ch.session() as client:
        recompute(client, ScoringParams(feed_size=30))
        warm(client, redis_client, users=len(world.users))
    port = free_port()
    env = {**os.environ, **stack.env(), "NOVA_CLICKHOUSE_DATABASE": ch.database}
    limits = ["--max-connections", str(MAX_CONNECTIONS), "--head-timeout", str(HEAD_TIMEOUT_S), "--keep-alive", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "nova_assets.cli", "serve", "--port", str(port), *limits],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            break
        except OSError:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "nova serve exited"
            assert time.monotonic() < deadline, "nova serve did not answer"
            time.sleep(0.2)
    served = Serve(port, proc, world)
    served.assert_healthy()
    rss_before = served.rss_kb()
    try:
        yield served
        # the whole suite's abuse leaves memory bounded
        assert served.rss_kb() - rss_before < 150_000, (rss_before, served.rss_kb())
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        ch.command(f"DROP DATABASE IF EXISTS {ch.database} SYNC")


def test_slow_and_idle_clients_are_cut_off(serve: Serve) -> None:
    trickling = []
    for _ in range(200):
        sock = serve.connect()
        sock.sendall(b"G")
        trickling.append(sock)
    idle = [serve.connect() for _ in range(100)]
    serve.assert_healthy()
    time.sleep(HEAD_TIMEOUT_S)
    assert all(_closed_within(s, 3.0) for s in [*trickling, *idle])
    for sock in [*trickling, *idle]:
        sock.close()
    # a client that keeps sending a header byte by byte is cut off at the deadline all the same
    with serve.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < HEAD_TIMEOUT_S + 3:
            try:
                sock.sendall(b"X")
            except OSError:
                closed = True
                break
            time.sleep(0.2)
        assert closed or _closed_within(sock, 1.0)
    serve.assert_healthy()


def test_connection_cap(serve: Serve) -> None:
    held = [serve.connect() for _ in range(MAX_CONNECTIONS + 50)]
    try:
        time.sleep(0.5)
        refused = 0
        for sock in held[MAX_CONNECTIONS:]:
            sock.settimeout(2)
            try:
                if b"503" in sock.recv(4096):
                    refused += 1
            except TimeoutError:
                pass
        assert refused >= 45
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    serve.assert_healthy()


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhello", b"400"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", b"400"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", b"400"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 7\r\n\r\n", b"400"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"400"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n", b"431"),
        (b"NONSENSE\r\n\r\n", b"400"),
    ],
    ids=["lying-length", "length-not-a-number", "negative-length", "two-lengths", "chunked-get", "huge-head", "junk"],
)
def test_malformed_framing_is_refused_and_closed(serve: Serve, raw: bytes, status: bytes) -> None:
    answer = _exchange(serve, raw)
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
    assert answer.count(b"HTTP/1.1 ") == 1
    serve.assert_healthy()


def test_no_second_response_from_a_body(serve: Serve) -> None:
    smuggled = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    for head in (
        b"POST /feed/x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"POST /feed/x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(smuggled),
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % len(smuggled),
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(smuggled),
    ):
        answer = _exchange(serve, head + smuggled)
        assert answer.count(b"HTTP/1.1 ") == 1, answer
        assert b"feed_api_latency_ms" not in answer
    serve.assert_healthy()


def test_large_body_is_not_buffered(serve: Serve) -> None:
    rss = serve.rss_kb()
    with serve.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 20000000\r\n\r\n")
        sent = 0
        chunk = b"x" * 65536
        try:
            while sent < 20_000_000:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the server closed the connection after refusing the head
        assert sent < 20_000_000 or _closed_within(sock, 2)
    assert serve.rss_kb() - rss < 10_000
    serve.assert_healthy()


def test_random_ids_neither_grow_redis_nor_evict_l1(serve: Serve) -> None:
    redis_client = RedisResource(url=os.environ["NOVA_REDIS_URL"]).client()
    real = serve.world.users[1]
    assert serve.get(f"/feed/{real}")[1]["source"] in ("redis", "l1")
    assert serve.get(f"/feed/{real}")[1]["source"] == "l1"

    def keys() -> set[bytes]:
        return {k for k in redis_client.scan_iter(count=1000) if not k.startswith(STATS_PREFIX.encode())}

    before = keys()
    ids = [uuid.uuid4() for _ in range(10_000)]

    def fetch(chunk: list[uuid.UUID]) -> set[str]:
        conn = HTTPConnection("127.0.0.1", serve.port, timeout=30)
        sources = set()
        for user in chunk:
            conn.request("GET", f"/feed/{user}?limit=2")
            resp = conn.getresponse()
            body = orjson.loads(resp.read())
            assert resp.status == 200
            sources.add(body["source"])
        conn.close()
        return sources

    with ThreadPoolExecutor(32) as pool:
        sources = set().union(*pool.map(fetch, [ids[i::32] for i in range(32)]))
    assert sources <= {"trending", "l1"}
    after = keys()
    assert after - before <= {b"feed:{trending}"}, sorted(after - before)[:5]
    assert serve.get(f"/feed/{real}")[1]["source"] == "l1"  # still in L1: random ids evicted nothing
    serve.assert_healthy()


def test_a_stalled_redis_does_not_delay_l1_hits(serve: Serve, stack: Stack) -> None:
    warm_user, redis_only = serve.world.users[2], serve.world.users[3]
    assert serve.get(f"/feed/{warm_user}")[0] == 200  # now in L1
    pid = stack.services["redis"].pid()
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        status, body = serve.get(f"/feed/{warm_user}")
        assert status == 200 and body["source"] == "l1"
        assert time.monotonic() - started < 0.2
        started = time.monotonic()
        status, body = serve.get(f"/feed/{redis_only}")  # not in L1: Redis is skipped, ClickHouse answers
        assert status == 200 and body["source"] == "clickhouse"
        assert time.monotonic() - started < 1.0
        time.sleep(3.0 - (time.monotonic() - started))
    finally:
        os.kill(pid, signal.SIGCONT)
    serve.assert_healthy()
