"""Lanes: events and CDC changes are cut into batches on their own clocks."""

from __future__ import annotations

from dataclasses import dataclass

from nova_assets.core.ingestion.batch import Lanes


@dataclass
class Message:
    """The part of a confluent-kafka Message that Lanes reads."""

    name: str

    def topic(self) -> str:
        return self.name


def test_each_lane_flushes_on_its_own_clock() -> None:
    lanes = Lanes(events_every_s=0.2, changes_every_s=1.0)
    assert lanes.wait(now=0.0, longest=0.05) == 0.05  # nothing open: the longest wait
    split = lanes.split([Message("nova.events"), Message("nova.public.posts"), Message("nova.events")], now=10.0)
    assert [[m.topic() for m in part] for _batch, part in split] == [
        ["nova.events", "nova.events"],
        ["nova.public.posts"],
    ]
    for batch, part in split:  # what Loader._absorb does with them, in short
        batch.skipped.extend((m.topic(), 0, i) for i, m in enumerate(part))
    assert len(lanes) == 3
    assert abs(lanes.wait(now=10.1, longest=1.0) - 0.1) < 1e-9  # the events batch is due first
    assert lanes.take_due(now=10.1, max_rows=100) == []
    [events] = lanes.take_due(now=10.25, max_rows=100)
    assert {t for t, _p, _o in events.skipped} == {"nova.events"}
    assert len(lanes) == 1 and lanes.take_due(now=10.9, max_rows=100) == []
    [changes] = lanes.take_due(now=11.05, max_rows=100)
    assert {t for t, _p, _o in changes.skipped} == {"nova.public.posts"}
    assert len(lanes) == 0


def test_a_full_lane_flushes_at_once_and_the_end_takes_the_rest() -> None:
    lanes = Lanes(events_every_s=0.2, changes_every_s=1.0)
    for batch, part in lanes.split([Message("nova.public.likes")] * 3 + [Message("nova.events")], now=0.0):
        batch.skipped.extend(("t", 0, i) for i in range(len(part)))
    [full] = lanes.take_due(now=0.01, max_rows=3)  # the changes reached max_rows; the events did not
    assert len(full) == 3
    assert [len(b) for b in lanes.take_all()] == [1]
    assert len(lanes) == 0 and lanes.take_all() == []
