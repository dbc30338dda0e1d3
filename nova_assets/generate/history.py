"""Write a world's history straight into ClickHouse: events, the posts and follows mirrors.

For the feed benchmark and the recommendation tests, which need days of history in seconds
rather than a stream. Events are staged as integer columns through Arrow and joined to the
world's ids inside ClickHouse (10 M rows without building 30 M UUID strings in Python).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import numpy as np
import pyarrow as pa
from clickhouse_connect.driver.client import Client

from nova_assets.core.world.demo import ACTIONS, DEVICES, World

EVENTS_FROM_STAGE = """
INSERT INTO events (event_id, event_time, user_id, post_id, author_id, action, dwell_ms, device, app_ver)
SELECT generateUUIDv4(s.n), fromUnixTimestamp64Milli(s.time_ms, 'UTC'), u.id, p.id, a.id,
       {actions:Array(String)}[s.action + 1], s.dwell_ms, {devices:Array(String)}[s.device + 1], '5.2.0'
FROM {stage:Identifier} AS s
INNER JOIN {users:Identifier} AS u ON u.i = s.user
INNER JOIN {users:Identifier} AS a ON a.i = s.author
INNER JOIN {posts:Identifier} AS p ON p.slot = s.slot
"""


def load_history(
    client: Client, world: World, start_s: float, end_s: float, events: int, chunk: int = 2_000_000
) -> dict[str, Any]:
    """Events over [start_s, end_s), every post published since `start_s - window`, every follow."""
    history = world.history(start_s, end_s, events)
    slots = world.post_slots(start_s - world.config.window_hours * 3600, end_s)
    authors = world.post_author(slots)
    tag = uuid.uuid4().hex[:12]
    users_t, posts_t, stage_t = f"world_users_{tag}", f"world_posts_{tag}", f"world_events_{tag}"
    client.command(f"CREATE TABLE {users_t} (i UInt32, id UUID) ENGINE = Memory")  # our own names
    client.command(f"CREATE TABLE {posts_t} (slot Int64, id UUID, author UUID, created Float64) ENGINE = Memory")
    client.command(
        f"CREATE TABLE {stage_t} (n UInt64, user UInt32, slot Int64, author UInt32, action UInt8, dwell_ms UInt32, "
        "device UInt8, time_ms Int64) ENGINE = Memory"
    )
    try:
        ids = world.user_ids()
        client.insert(users_t, [list(range(len(ids))), ids], column_names=["i", "id"], column_oriented=True)
        client.insert(
            posts_t,
            [slots.tolist(), [world.post_id(s) for s in slots.tolist()], [ids[a] for a in authors.tolist()],
             (slots / world.config.post_rate).tolist()],
            column_names=["slot", "id", "author", "created"], column_oriented=True,
        )  # fmt: skip
        for lo in range(0, events, chunk):
            hi = min(events, lo + chunk)
            part = {k: v[lo:hi] for k, v in history.items() if k != "mechanism"}
            part["n"] = np.arange(lo, hi, dtype=np.uint64)
            client.insert_arrow(stage_t, pa.table({k: pa.array(v) for k, v in part.items()}))
            client.command(
                EVENTS_FROM_STAGE,
                parameters={"actions": list(ACTIONS), "devices": list(DEVICES), "stage": stage_t, "users": users_t,
                            "posts": posts_t},
            )  # fmt: skip
            client.command(f"TRUNCATE TABLE {stage_t}")
        client.command(
            "INSERT INTO posts (id, author_id, body, created_at, updated_at, version) "
            "SELECT id, author, 'post', toDateTime64(created, 6, 'UTC'), toDateTime64(created, 6, 'UTC'), 1 "
            f"FROM {posts_t}"
        )
        follows = world.follow_pairs
        since = dt.datetime.fromtimestamp(start_s - 86_400, dt.UTC)
        client.insert(
            "follows",
            [[ids[f] for f in follows[:, 0].tolist()], [ids[f] for f in follows[:, 1].tolist()],
             [since] * len(follows), [1] * len(follows)],
            column_names=["follower_id", "followee_id", "created_at", "version"], column_oriented=True,
        )  # fmt: skip
    finally:
        for name in (users_t, posts_t, stage_t):
            client.command(f"DROP TABLE IF EXISTS {name}")
    return {"events": events, "posts": len(slots), "follows": len(world.follow_pairs), "users": world.config.users}
