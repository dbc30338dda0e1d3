"""The event generator's pacing: steps by ticks, not by events, and never waits when behind."""

from __future__ import annotations

import re
import time

from nova_assets.core.world.ids import random_uuids
from nova_assets.generate.events import stream

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_a_slow_step_does_not_turn_the_stream_into_one_event_per_step() -> None:
    """At 6,000/s a step costing 0.3 ms (longer than 1/rate) still gets ~one step per tick.

    The old loop checked the clock again at once after each step, handed out 1-2 events per step
    and spun a core (~4,000 steps in this second).
    """
    steps, events = 0, 0
    for n in stream(6000, 1.0):
        steps += 1
        events += n
        end = time.perf_counter() + 0.0003
        while time.perf_counter() < end:
            pass
    assert steps <= 60, steps
    assert 5000 <= events <= 6000, events


def test_a_full_chunk_goes_on_at_once() -> None:
    """Behind (a full chunk due), the stream does not wait for the next tick."""
    started = time.monotonic()
    sizes = [n for n in stream(1e7, 0.1, chunk=100)]
    assert time.monotonic() - started < 0.5
    assert len(sizes) > 20, len(sizes)  # 0.1 s is five ticks: more steps means no waits


def test_a_slow_rate_sends_each_event_on_time() -> None:
    """At 20/s steps come 1/rate apart and hold the rate (within a tick of scheduling delay)."""
    started = time.monotonic()
    events = sum(stream(20, 0.5))
    assert 8 <= events <= 10, events
    assert time.monotonic() - started < 2.0


def test_random_uuids_are_distinct_version_4_ids() -> None:
    ids = random_uuids(1000)
    assert len(set(ids)) == 1000
    assert all(UUID4.match(i) for i in ids)
