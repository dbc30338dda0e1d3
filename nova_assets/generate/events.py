"""Interaction events for nova.events, drawn from the demo world (`world.py`: tastes, follows, hot
posts, views ≫ clicks > likes > comments ≈ shares), and optionally a share of malformed messages of
every kind the loader must dead-letter.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import orjson

from nova_assets.core.ingestion.messages import EVENTS_TOPIC
from nova_assets.core.kafka_admin import ensure_topic
from nova_assets.core.kafka_producer import SteadyProducer
from nova_assets.core.world.demo import World, iso_ms
from nova_assets.resources.kafka import KafkaResource

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
            # wake every 20 ms (or 1/rate when slower) and send what is due then: sleeping 1/rate
            # spun a core at 10k/s, and a wake per event cost 0.13 cores at 200/s; the producer
            # lingers 50 ms anyway, so events leave in the same batches
            time.sleep(min(0.05, max(0.02, 1.0 / max(rate, 1.0))))
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
    world: World | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Send events (and a share of malformed ones) to nova.events; returns counts by kind."""
    ensure_topic(kafka, EVENTS_TOPIC, partitions)
    pop = world or World()
    producer = SteadyProducer(kafka.producer)  # a restarted local broker forgets producer IDs
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
            producer.produce(EVENTS_TOPIC, value)
        producer.poll(0)
        if on_progress:
            on_progress(counts["valid"] + counts["malformed"])
    producer.flush(30)
    return counts
