"""Demo reads: feed requests to `nova serve`, so the hit-rate and latency checks measure real reads.

Readers are the users active in the last hour, busiest first and Zipf-skewed (a real feed's
busiest users read most, and they are the ones warmed), plus a small share of readers nobody
has seen yet, drawn from a fixed pool of `cold_pool` ids (new readers come back too).
"""

from __future__ import annotations

import random
import time
import uuid
from http.client import HTTPConnection, HTTPException

from nova_assets.resources.clickhouse import ClickHouseResource

ACTIVE = """
SELECT toString(user_id) FROM events
WHERE ingested_at > now64(3) - INTERVAL 1 HOUR
GROUP BY user_id ORDER BY count() DESC
LIMIT {n:UInt32}
"""


def read_feeds(
    clickhouse: ClickHouseResource,
    port: int,
    rate: float,
    duration_s: float,
    cold_share: float = 0.05,
    cold_pool: int = 200,
    seed: int = 11,
) -> dict[str, int]:
    """Request `/feed/<user>` at `rate`/s for `duration_s`; returns counts by HTTP status."""
    rng = random.Random(seed)
    strangers = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(cold_pool)]
    counts: dict[str, int] = {}
    users: list[str] = []
    refreshed = 0.0
    conn: HTTPConnection | None = None
    deadline = time.monotonic() + duration_s
    next_at = time.monotonic()
    while time.monotonic() < deadline:
        if time.monotonic() - refreshed > 60 or not users:
            users = [r[0] for r in clickhouse.query(ACTIVE, parameters={"n": 2000}).result_rows]
            refreshed = time.monotonic()
        if not users or rng.random() < cold_share:
            user = rng.choice(strangers)
        else:  # log-uniform rank, i.e. Zipf with s = 1: rank r is read about 1/r as often as the busiest
            user = users[min(len(users), int(len(users) ** rng.random())) - 1]
        try:
            conn = conn or HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", f"/feed/{user}?limit=20")
            response = conn.getresponse()
            response.read()
            key = str(response.status)
        except (OSError, HTTPException):
            key = "error"
            conn = None
            time.sleep(1.0)  # the server is starting or restarting
        counts[key] = counts.get(key, 0) + 1
        next_at += 1.0 / rate
        time.sleep(max(0.0, next_at - time.monotonic()))
    return counts
