from __future__ import annotations

import time

import orjson
import pytest

from nova_assets.core.ingestion.messages import MirrorShape, Rejected, decode_change, decode_event
from nova_assets.core.world.demo import World, WorldConfig
from nova_assets.generate.events import MALFORMED_KINDS, iso_ms, malformed

GOOD = World(WorldConfig(users=10)).events(1)[0]
EXPECTED_KIND = {
    "invalid_json": "invalid_json",
    "not_utf8": "not_utf8",
    "not_object": "not_object",
    "missing_field": "missing_field",
    "wrong_type": "invalid_field",
    "bad_uuid": "invalid_field",
    "negative_dwell": "invalid_field",
    "future_time": "invalid_field",
    "ancient_time": "invalid_field",
    "unknown_action": "invalid_field",
}
EXPECTED_TEXT = {
    "missing_field": "user_id",
    "wrong_type": "$.dwell_ms",
    "bad_uuid": "$.post_id",
    "negative_dwell": ">= 0",
    "future_time": "more than a day in the future",
    "ancient_time": "before 2000",
    "unknown_action": "$.action",
}


def test_valid_event_row() -> None:
    event = orjson.loads(GOOD)
    decoded = decode_event(GOOD, "nova.events", 3, 42)
    row = orjson.loads(decoded.row)
    assert row[0] == event["event_id"] and row[2] == event["user_id"]
    assert row[-3:] == ["nova.events", 3, 42]
    assert decoded.unknown_fields == 0


def test_epoch_millis_and_extra_fields() -> None:
    event = orjson.loads(GOOD)
    now = int(time.time() * 1000)
    event["event_time"] = now
    event["experiment"] = "b"
    event["locale"] = "fr"
    decoded = decode_event(orjson.dumps(event), "nova.events", 0, 0)
    assert decoded.event_ms == now
    assert orjson.loads(decoded.row)[1] == f"{now // 1000}.{now % 1000:03d}"
    assert decoded.unknown_fields == 2
    event["event_time"] = iso_ms(now)
    assert decode_event(orjson.dumps(event), "nova.events", 0, 0).event_ms == now


@pytest.mark.parametrize("kind", [k for k in MALFORMED_KINDS if k != "oversized"])
def test_every_malformed_kind_has_a_precise_reason(kind: str) -> None:
    with pytest.raises(Rejected) as info:
        decode_event(malformed(kind, GOOD), "nova.events", 0, 0)
    assert info.value.kind == EXPECTED_KIND[kind]
    if kind in EXPECTED_TEXT:
        assert EXPECTED_TEXT[kind] in str(info.value)


def test_null_payload_is_rejected() -> None:
    with pytest.raises(Rejected, match="no value"):
        decode_event(None, "nova.events", 0, 0)


SHAPE = MirrorShape(
    "posts",
    {
        "id": "UUID",
        "author_id": "UUID",
        "body": "String",
        "created_at": "DateTime64(6, 'UTC')",
        "updated_at": "DateTime64(6, 'UTC')",
    },
)
RECORD = {
    "id": "6f1c0e3e-2c9b-4c36-9f53-1f0f7e0a9d11",
    "author_id": "0b6f1c0e-2c9b-4c36-9f53-1f0f7e0a9d11",
    "body": "hello",
    "created_at": "2026-11-27T10:15:30.123456Z",
    "updated_at": "2026-11-27T10:15:30.123456Z",
    "__table": "posts",
    "__lsn": 30975008,
    "__ts_ms": 1795766130123,
    "__deleted": "false",
}


def test_change_record_maps_version_and_delete() -> None:
    row = orjson.loads(decode_change(orjson.dumps(RECORD), SHAPE).row)
    assert row["version"] == 30975008 and row["is_deleted"] == 0
    assert row["created_at"] == "1795774530.123456"
    deleted = orjson.loads(decode_change(orjson.dumps({**RECORD, "__deleted": "true"}), SHAPE).row)
    assert deleted["is_deleted"] == 1
    assert decode_change(None, SHAPE) is None  # tombstone


def test_change_schema_drift_is_rejected() -> None:
    with pytest.raises(Rejected) as info:
        decode_change(orjson.dumps({**RECORD, "title": "new column"}), SHAPE)
    assert info.value.kind == "schema_drift" and "unknown column(s) ['title']" in str(info.value)
    with pytest.raises(Rejected, match="expects UUID"):
        decode_change(orjson.dumps({**RECORD, "author_id": 5}), SHAPE)
