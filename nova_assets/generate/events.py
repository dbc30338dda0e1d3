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
from nova_assets.core.world.ahead import DrawAhead
from nova_assets.core.world.demo import World
from nova_assets.core.world.ids import iso_ms
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


TICK_S = 0.02


def stream(rate: float, duration_s: float, chunk: int = 1000) -> Iterator[int]:
    """How many events to send at each step to hold `rate` per second (0 = as fast as possible).

    Steps come once per 20 ms tick (1/rate when slower) with what fell due since the last one.
    Checking the clock again at once after a step handed out 1-2 events per step whenever a step
    took longer than 1/rate, and spun a core; the producer lingers anyway, so events leave in the
    same batches. A full chunk means behind: the next step goes at once.
    """
    start = time.monotonic()
    end = start + duration_s
    tick = max(TICK_S, min(1.0, 1.0 / rate)) if rate > 0 else 0.0
    sent = 0
    while True:
        now = time.monotonic()
        if now >= end:
            return
        n = chunk if rate <= 0 else min(int(rate * (now - start)) - sent, chunk)
        if n > 0:
            sent += n
            yield n
            if n == chunk:
                continue
        next_tick = start + (int((now - start) / tick) + 1) * tick
        time.sleep(max(0.0, min(next_tick, end) - time.monotonic()))


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
    # a second of the stream per draw (a draw per 20 ms step was a third of the generator's CPU);
    # formatted at each send, so an event's time is when it leaves
    ahead = DrawAhead(pop, max(1000, int(rate)))
    producer = SteadyProducer(kafka.producer)  # a restarted local broker forgets producer IDs
    counts = {"valid": 0, "malformed": 0}
    rng = np.random.default_rng(11)
    kinds = 0
    for n in stream(rate, duration_s if total is None else 1e9):
        if total is not None:
            n = min(n, total - counts["valid"] - counts["malformed"])
            if n <= 0:
                break
        now_ms = int(time.time() * 1000)
        values = pop.format_events(ahead.take(n, now_ms / 1000.0), now_ms)
        bad = np.nonzero(rng.random(len(values)) < malformed_share)[0].tolist() if malformed_share else []
        for i in bad:
            values[i] = malformed(MALFORMED_KINDS[kinds % len(MALFORMED_KINDS)], values[i])
            kinds += 1
        counts["malformed"] += len(bad)
        counts["valid"] += len(values) - len(bad)
        producer.produce_many(EVENTS_TOPIC, values)
        producer.poll(0)
        if on_progress:
            on_progress(counts["valid"] + counts["malformed"])
    producer.flush(30)
    return counts
