"""Realistic interaction events for nova.events: Zipf-popular users and posts, a skewed action mix
(views ≫ clicks > likes > comments ≈ shares), users returning to the same authors, and optionally
a share of malformed messages of every kind the loader must dead-letter.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import orjson
from confluent_kafka.admin import NewTopic

from nova_assets.defs.ingestion.messages import EVENTS_TOPIC
from nova_assets.resources.kafka import KafkaResource

ACTIONS = np.array(["view", "click", "like", "comment", "share"])
ACTION_P = np.array([0.80, 0.10, 0.06, 0.02, 0.02])
DEVICES = np.array(["ios", "android", "web"])

MALFORMED_KINDS = [
    "invalid_json",
    "not_utf8",
    "not_object",
    "missing_field",
    "wrong_type",
    "bad_uuid",
    "negative_dwell",
    "future_time",
    "ancient_time",
    "unknown_action",
    "oversized",
]


def iso_ms(ms: int) -> str:
    """RFC 3339 UTC with milliseconds, e.g. 2026-11-27T10:15:30.123Z."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@dataclass
class Population:
    users: list[str]
    posts: list[str]
    authors: list[str]  # author of each post
    rng: np.random.Generator

    @classmethod
    def create(cls, users: int = 20_000, posts: int = 50_000, seed: int = 7) -> Population:
        rng = np.random.default_rng(seed)
        user_ids = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(users)]
        # authors are Zipf-popular users too
        author_idx = np.minimum(rng.zipf(1.3, size=posts) - 1, users - 1)
        post_ids = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(posts)]
        return cls(user_ids, post_ids, [user_ids[i] for i in author_idx], rng)

    def events(self, n: int, now_ms: int | None = None) -> list[bytes]:
        rng = self.rng
        users = np.minimum(rng.zipf(1.2, size=n) - 1, len(self.users) - 1)
        # each user favours a neighbourhood of posts (same authors come back); plus global hot posts
        hot = np.minimum(rng.zipf(1.1, size=n) - 1, len(self.posts) - 1)
        local = (users * 97 + np.minimum(rng.zipf(1.5, size=n), 500)) % len(self.posts)
        posts = np.where(rng.random(n) < 0.5, hot, local)
        actions = rng.choice(len(ACTIONS), size=n, p=ACTION_P)
        dwell = rng.gamma(2.0, 4000.0, size=n).astype(np.int64)
        devices = rng.integers(0, 3, size=n)
        # the events of one call happen now: one timestamp for all (a paced generator calls every few ms)
        when = iso_ms(now_ms if now_ms is not None else int(time.time() * 1000))
        names, kinds = ACTIONS.tolist(), DEVICES.tolist()
        dumps, new_id = orjson.dumps, uuid.uuid4
        all_users, all_posts, all_authors = self.users, self.posts, self.authors
        return [
            dumps(
                {
                    "event_id": str(new_id()),
                    "user_id": all_users[u],
                    "post_id": all_posts[p],
                    "author_id": all_authors[p],
                    "event_time": when,
                    "action": names[a],
                    "dwell_ms": d,
                    "device": kinds[k],
                    "app_ver": "5.2.0",
                }
            )
            for u, p, a, d, k in zip(
                users.tolist(), posts.tolist(), actions.tolist(), dwell.tolist(), devices.tolist(), strict=True
            )
        ]


def malformed(kind: str, good: bytes) -> bytes:
    """A bad message of the given kind, derived from a good one."""
    event = orjson.loads(good)
    if kind == "invalid_json":
        return good[:-5]
    if kind == "not_utf8":
        return good.replace(b'"5.2.0"', b'"\xff\xfe"')
    if kind == "not_object":
        return orjson.dumps([event])
    if kind == "missing_field":
        event.pop("user_id")
    elif kind == "wrong_type":
        event["dwell_ms"] = "long"
    elif kind == "bad_uuid":
        event["post_id"] = "not-a-uuid"
    elif kind == "negative_dwell":
        event["dwell_ms"] = -5
    elif kind == "future_time":
        event["event_time"] = iso_ms(int(time.time() * 1000) + 3 * 86_400_000)
    elif kind == "ancient_time":
        event["event_time"] = "1999-12-31T23:59:59.000Z"
    elif kind == "unknown_action":
        event["action"] = "poke"
    elif kind == "oversized":
        event["padding"] = "x" * 300_000
    return orjson.dumps(event)


def ensure_topic(kafka: KafkaResource, topic: str = EVENTS_TOPIC, partitions: int = 1) -> None:
    admin = kafka.admin()
    if topic in admin.list_topics(timeout=kafka.timeout_s).topics:
        return
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    try:
        futures[topic].result(timeout=10)
    except Exception as exc:  # a concurrent creator is fine
        if "already exists" not in str(exc).lower():
            raise


def stream(rate: float, duration_s: float, chunk: int = 1000) -> Iterator[int]:
    """How many events to send at each step to hold `rate` per second (0 = as fast as possible)."""
    start = time.monotonic()
    sent = 0
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= duration_s:
            return
        due = int(rate * elapsed) if rate > 0 else sent + chunk
        if due <= sent:
            # wake every few ms and send what is due then: sleeping 1/rate (0.1 ms at 10k/s) spun a core
            time.sleep(max(0.002, min(0.05, 1.0 / max(rate, 1.0))))
            continue
        n = min(due - sent, chunk)
        sent += n
        yield n


def produce_events(
    kafka: KafkaResource,
    *,
    rate: float,
    duration_s: float,
    malformed_share: float = 0.0,
    partitions: int = 1,
    total: int | None = None,
    population: Population | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Send events (and a share of malformed ones) to nova.events; returns counts by kind."""
    ensure_topic(kafka, EVENTS_TOPIC, partitions)
    pop = population or Population.create()
    producer = kafka.producer()
    counts = {"valid": 0, "malformed": 0}
    rng = np.random.default_rng(11)
    kinds = 0
    for n in stream(rate, duration_s if total is None else 1e9):
        if total is not None:
            n = min(n, total - counts["valid"] - counts["malformed"])
            if n <= 0:
                break
        for value in pop.events(n):
            if malformed_share and rng.random() < malformed_share:
                value = malformed(MALFORMED_KINDS[kinds % len(MALFORMED_KINDS)], value)
                kinds += 1
                counts["malformed"] += 1
            else:
                counts["valid"] += 1
            while True:
                try:
                    producer.produce(EVENTS_TOPIC, value=value)
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.poll(0)
        if on_progress:
            on_progress(counts["valid"] + counts["malformed"])
    producer.flush(30)
    return counts
