"""The read load of `nova bench platform`: an open-loop HTTP client of `nova serve` in its own process.

Open loop (a fixed schedule, not as fast as answers come), warmed users and a share of cold ids
(COLD, NOVA_BENCH_PLATFORM_COLD_SHARE, default 3%: with 10% the cache hit rate could never reach the
SLO's 95% target, and every check round would fail by the load's construction), each
request timed by the client with its late start counted. It runs as `python -c` so the CPU sampler
tells it apart from the platform (its command line starts `# nova bench read load`).
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from nova_assets.core import quantiles

COLD = float(os.environ.get("NOVA_BENCH_PLATFORM_COLD_SHARE", "0.03"))

READER = r"""# nova bench read load
import random, socket, sys, threading, time, orjson
port, rate, seconds, users_file = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
cold = float(sys.argv[5])  # the share of reads for ids without a feed
warm = [u for u in open(users_file).read().split() if u]
rng = random.Random()  # fresh cold ids every run: a repeated id would be an L1 hit
# a slow miss holds up only its own thread's schedule; at low rates fewer threads, so none idles
# past `nova serve`'s keep-alive limit (a connection it closed is not an error of the platform)
THREADS = max(1, min(64, int(rate)))
out = {"hit": [], "miss": [], "errors": 0, "timeouts": 0, "sent": 0, "sources": {}, "hits": []}
lock = threading.Lock()
start = time.monotonic() + 0.2

class Closed(Exception):
    pass

class Conn:
    # HTTP/1.1 keep-alive GETs on a socket: http.client cost ~240 us of CPU per read (its
    # response headers go through the email package), as much as the read costs the server
    def __init__(self):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
    def _more(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise Closed()
        self.buf += chunk
    def get(self, path):
        self.sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            self._more()
        head, self.buf = self.buf[:end].lower(), self.buf[end + 4 :]
        at = head.find(b"\r\ncontent-length:")
        if at < 0 or b"transfer-encoding" in head:
            raise ValueError("a response without content-length: " + head[:200].decode(errors="replace"))
        length = int(head[at + 17 : (head.find(b"\r\n", at + 2) % (len(head) + 1))])
        while len(self.buf) < length:
            self._more()
        body, self.buf = self.buf[:length], self.buf[length:]
        if b"\r\nconnection: close" in head:
            self.close()
            self.sock = None
        return int(head[9:12]), body
    def close(self):
        if self.sock is not None:
            self.sock.close()

def work(k):
    conn = Conn()
    local = {"hit": [], "miss": [], "errors": 0, "timeouts": 0, "sent": 0, "sources": {}, "hits": []}
    i = 0
    while True:
        due = start + (i * THREADS + k) / rate  # open loop: a fixed schedule, not as fast as answers come
        if due - start > seconds:
            break
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        i += 1
        user = rng.choice(warm) if rng.random() >= cold else "00000000-0000-4000-8000-%012d" % rng.randrange(10**12)
        t0 = time.perf_counter()
        local["sent"] += 1
        try:
            try:
                if conn.sock is None:
                    raise Closed()
                status, body = conn.get("/feed/" + user + "?limit=20")
            except (Closed, ConnectionResetError, BrokenPipeError):
                conn.close()  # the server closed an idle keep-alive connection: a new one, as browsers do
                conn = Conn()
                status, body = conn.get("/feed/" + user + "?limit=20")
            ms = (time.perf_counter() - t0) * 1000 + max(0.0, -delay) * 1000  # late starts count
            if status != 200:
                local["errors"] += 1
                continue
            source = orjson.loads(body)["source"]
            if source in ("l1", "redis"):  # a hit: also when and from where (a slow spell shows in a timeline)
                local["hit"].append(ms)
                local["hits"].append((round(due - start, 2), source, round(ms, 2)))
            else:
                local["miss"].append(ms)
            local["sources"][source] = local["sources"].get(source, 0) + 1
        except TimeoutError:
            local["timeouts"] += 1
            conn.close()
            conn = Conn()
        except Exception:
            local["errors"] += 1
            conn.close()
            conn = Conn()
    conn.close()
    with lock:
        for key in ("hit", "miss", "hits"):
            out[key].extend(local[key])
        for key in ("errors", "timeouts", "sent"):
            out[key] += local[key]
        for source, n in local["sources"].items():
            out["sources"][source] = out["sources"].get(source, 0) + n
threads = [threading.Thread(target=work, args=(k,)) for k in range(THREADS)]
for t in threads: t.start()
for t in threads: t.join()
print(orjson.dumps(out).decode())
"""


def summary(values: list[float]) -> dict[str, float]:
    """P50/P95/P99/max and the count of one latency figure."""
    return {**quantiles.summary(values), "n": len(values)}


def start(port: int, rate: float, seconds: float, users_file: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start reading /feed/<user> at `rate` per second for `seconds`."""
    return subprocess.Popen(
        [sys.executable, "-c", READER, str(port), str(rate), str(seconds), str(users_file), str(COLD)],
        stdout=subprocess.PIPE,
        env=env,
    )


def figures(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    """Hit and miss latencies, errors, time-outs and requests sent, once the client is done."""
    out, _ = proc.communicate(timeout=600)
    raw = orjson.loads(out.strip().splitlines()[-1])
    return {
        "hit": summary(raw["hit"]),
        "miss": summary(raw["miss"]),
        "errors": raw["errors"],
        "timeouts": raw["timeouts"],
        "sent": raw["sent"],
        "sources": raw["sources"],  # answers by tier (l1, redis, clickhouse, trending, degraded)
        # hits by the tier that answered (L1 on the loop, Redis one round trip away)
        "hit_by_source": {
            tier: summary([ms for _at, source, ms in raw["hits"] if source == tier]) for tier in ("l1", "redis")
        },
        "hit_timeline": hit_timeline(raw["hits"]),
    }


def hit_timeline(hits: list[tuple[float, str, float]], step_s: float = 10.0) -> list[tuple[float, int, float, float]]:
    """(seconds from the start, hits, P95 ms, max ms) per `step_s` of the read schedule."""
    buckets: dict[int, list[float]] = {}
    for at, _source, ms in hits:
        buckets.setdefault(int(at // step_s), []).append(ms)
    return [(k * step_s, len(v), quantiles.summary(v)["p95"], max(v)) for k, v in sorted(buckets.items())]


def redis_skipped(port: int) -> dict[str, float]:
    """`nova serve`'s count of reads that went past Redis to ClickHouse, by reason (slow, error)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    prefix = 'feed_redis_skipped_total{reason="'
    return {
        line[len(prefix) :].split('"', 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix)
    }
