"""Decoding and validating Kafka messages into ClickHouse rows, or into dead letters with a reason.

msgspec decodes and validates in one pass in C (about 0.4M events/s on one core) and says
exactly what is wrong (`Expected int >= 0, got -5 - at $.dwell_ms`); rows are re-encoded as
JSONCompactEachRow, which ClickHouse parses far faster than Python could build native columns.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
import numpy as np

from nova_assets.topics import CDC_TOPIC_PREFIX, EVENTS_TOPIC, MIRROR_TABLES  # noqa: F401 - re-exported

UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_UUID = re.compile(UUID_PATTERN)
MIN_EVENT_MS = int(dt.datetime(2000, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
MAX_FUTURE_MS = 86_400_000

Uuid = Annotated[str, msgspec.Meta(pattern=UUID_PATTERN)]
Action = Literal["view", "click", "like", "comment", "share"]


class EventMessage(msgspec.Struct):
    """One message on nova.events; unknown extra fields are ignored (and counted)."""

    event_id: Uuid
    user_id: Uuid
    post_id: Uuid
    author_id: Uuid
    event_time: Annotated[dt.datetime, msgspec.Meta(tz=True)] | int
    action: Action
    dwell_ms: Annotated[int, msgspec.Meta(ge=0, le=4_294_967_295)]
    device: str
    app_ver: str


EVENT_COLUMNS = [
    "event_id",
    "event_time",
    "user_id",
    "post_id",
    "author_id",
    "action",
    "dwell_ms",
    "device",
    "app_ver",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
]
EVENT_FIELDS = frozenset(EventMessage.__struct_fields__)

_event_decoder = msgspec.json.Decoder(EventMessage)
_keys_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_encoder = msgspec.json.Encoder()


class Rejected(Exception):
    """A message that cannot be loaded: `kind` is a short category, the text the precise reason."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


def ms_to_text(ms: int) -> str:
    """Epoch milliseconds as ClickHouse DateTime64(3) text (`seconds.millis`)."""
    return f"{ms // 1000}.{ms % 1000:03d}"


def _decode_error(raw: bytes, exc: Exception) -> Rejected:
    if isinstance(exc, msgspec.ValidationError):
        text = str(exc)
        if text.startswith("Object missing required field"):
            return Rejected("missing_field", text)
        if text.startswith("Expected `object`") and " - at " not in text:
            return Rejected("not_object", f"payload is not a JSON object ({text})")
        return Rejected("invalid_field", text)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return Rejected("not_utf8", f"payload is not UTF-8 ({bad.reason} at byte {bad.start})")
    return Rejected("invalid_json", f"payload is not valid JSON ({exc})")


@dataclass(slots=True)
class DecodedEvent:
    row: bytes
    event_ms: int
    unknown_fields: int


def decode_event(raw: bytes | None, topic: str, partition: int, offset: int, now_ms: int | None = None) -> DecodedEvent:
    """Validate one nova.events message and return its JSONCompactEachRow line; raises Rejected."""
    if raw is None:
        raise Rejected("empty", "message has no value (null payload)")
    try:
        event = _event_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise _decode_error(raw, exc) from None
    when = event.event_time
    event_ms = when if isinstance(when, int) else int(when.timestamp() * 1000)
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    if event_ms > now_ms + MAX_FUTURE_MS:
        raise Rejected("invalid_field", f"event_time {_show(when)} is more than a day in the future - at $.event_time")
    if event_ms < MIN_EVENT_MS:
        raise Rejected("invalid_field", f"event_time {_show(when)} is before 2000-01-01 - at $.event_time")
    keys = _keys_decoder.decode(raw)
    unknown = len(keys) - len(EVENT_FIELDS) if len(keys) > len(EVENT_FIELDS) else 0
    row = _encoder.encode(
        [
            event.event_id,
            ms_to_text(event_ms),
            event.user_id,
            event.post_id,
            event.author_id,
            event.action,
            event.dwell_ms,
            event.device,
            event.app_ver,
            topic,
            partition,
            offset,
        ]
    )
    return DecodedEvent(row, event_ms, unknown)


class _PlainEvent(msgspec.Struct, forbid_unknown_fields=True):
    """Batch fast path: UUIDs as plain strings (checked in bulk with numpy), no extra fields."""

    event_id: str
    user_id: str
    post_id: str
    author_id: str
    event_time: Annotated[dt.datetime, msgspec.Meta(tz=True)] | int
    action: Action
    dwell_ms: Annotated[int, msgspec.Meta(ge=0, le=4_294_967_295)]
    device: str
    app_ver: str


class _LenientEvent(_PlainEvent, forbid_unknown_fields=False):
    """Batch path for producers that send extra fields (they are ignored and counted)."""


_events_decoder = msgspec.json.Decoder(list[_PlainEvent])
_events_lenient_decoder = msgspec.json.Decoder(list[_LenientEvent])
_events_keys_decoder = msgspec.json.Decoder(list[dict[str, msgspec.Raw]])
CHUNK = 512
_HEX = np.zeros(256, dtype=bool)
_HEX[np.frombuffer(b"0123456789abcdefABCDEF", dtype=np.uint8)] = True
_DASHES = np.zeros(36, dtype=bool)
_DASHES[[8, 13, 18, 23]] = True


def uuids_valid(values: list[str]) -> bool:
    """True when every string is a canonical 8-4-4-4-12 hex UUID (vectorised; ~50 ns each)."""
    if any(len(v) != 36 for v in values):
        return False
    try:
        buf = np.frombuffer("".join(values).encode("ascii"), dtype=np.uint8).reshape(-1, 36)
    except UnicodeEncodeError:
        return False
    hex_ok = _HEX[buf]
    return bool(np.all(hex_ok[:, ~_DASHES]) and np.all(buf[:, _DASHES] == ord("-")))


def _decode_chunk(joined: bytes, count: int) -> tuple[Sequence[_PlainEvent] | None, int]:
    """Decode a JSON array of events; (None, 0) when any of them needs the per-message path."""
    try:
        return _events_decoder.decode(joined), 0
    except msgspec.ValidationError as exc:
        if "unknown field" not in str(exc):
            return None, 0
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None, 0
    try:
        events = _events_lenient_decoder.decode(joined)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
        return None, 0
    keys = sum(map(len, _events_keys_decoder.decode(joined)))
    return events, max(0, keys - len(EVENT_FIELDS) * count)


@dataclass
class EventBatch:
    """Validated events of one micro-batch, kept as columns and encoded once as JSONColumns."""

    columns: dict[str, list[Any]]
    event_ms: list[int]
    unknown_fields: int = 0

    @classmethod
    def empty(cls) -> EventBatch:
        return cls({c: [] for c in EVENT_COLUMNS}, [])

    def __len__(self) -> int:
        return len(self.event_ms)

    def encode(self, **constants: Any) -> bytes:
        """JSONColumns of the batch, plus one column per keyword holding that value in every row."""
        if not constants:
            return _encoder.encode(self.columns)
        n = len(self.event_ms)
        return _encoder.encode({**self.columns, **{name: [value] * n for name, value in constants.items()}})


def _event_ms(event: EventMessage | _PlainEvent) -> int:
    when = event.event_time
    return when if isinstance(when, int) else int(when.timestamp() * 1000)


def _in_range(ms: int, now_ms: int) -> bool:
    return MIN_EVENT_MS <= ms <= now_ms + MAX_FUTURE_MS


def decode_events(
    values: list[bytes | None],
    partitions: list[int],
    offsets: list[int],
    topic: str,
    out: EventBatch,
    max_bytes: int,
    now_ms: int | None = None,
) -> list[tuple[int, Rejected]]:
    """Validate many messages at once into `out`; returns (index, reason) of the rejected ones.

    Chunks of valid messages are decoded by one msgspec call (a JSON array of the payloads),
    about 3x faster than one call per message; a chunk holding any bad message is redone
    message by message so each bad one gets its own precise reason.
    """
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    rejected: list[tuple[int, Rejected]] = []
    cols = out.columns
    for start in range(0, len(values), CHUNK):
        chunk = values[start : start + CHUNK]
        events: Sequence[_PlainEvent] | None = None
        present = [v for v in chunk if v is not None]
        if len(present) == len(chunk) and max(map(len, present)) <= max_bytes:
            events, unknown = _decode_chunk(b"[" + b",".join(present) + b"]", len(chunk))
            if events is not None:
                ms = [_event_ms(e) for e in events]
                ids = {
                    name: [getattr(e, name) for e in events] for name in ("event_id", "user_id", "post_id", "author_id")
                }
                if all(_in_range(m, now_ms) for m in ms) and all(uuids_valid(v) for v in ids.values()):
                    out.unknown_fields += unknown
                else:
                    events = None
        if events is not None:
            stop = start + len(chunk)
            cols["event_id"] += ids["event_id"]
            cols["event_time"] += [m / 1000 for m in ms]
            cols["user_id"] += ids["user_id"]
            cols["post_id"] += ids["post_id"]
            cols["author_id"] += ids["author_id"]
            cols["action"] += [e.action for e in events]
            cols["dwell_ms"] += [e.dwell_ms for e in events]
            cols["device"] += [e.device for e in events]
            cols["app_ver"] += [e.app_ver for e in events]
            cols["kafka_topic"] += [topic] * len(events)
            cols["kafka_partition"] += partitions[start:stop]
            cols["kafka_offset"] += offsets[start:stop]
            out.event_ms += ms
            continue
        for i, raw in enumerate(chunk, start):
            try:
                if raw is not None and len(raw) > max_bytes:
                    raise Rejected("oversized", f"payload of {len(raw)} bytes exceeds {max_bytes} (max_message_bytes)")
                one = decode_event(raw, topic, partitions[i], offsets[i], now_ms)
            except Rejected as exc:
                rejected.append((i, exc))
                continue
            row = msgspec.json.decode(one.row)
            for column, value in zip(EVENT_COLUMNS, row, strict=True):
                cols[column].append(value)
            cols["event_time"][-1] = one.event_ms / 1000
            out.event_ms.append(one.event_ms)
            out.unknown_fields += one.unknown_fields
    return rejected


def _show(value: Any) -> str:
    return value.isoformat() if isinstance(value, dt.datetime) else repr(value)


# --- CDC records (Debezium ExtractNewRecordState: columns + __table, __lsn, __ts_ms, __source_ts_ms, __deleted) ---

MIRROR_META_COLUMNS = ("version", "is_deleted", "source_ts", "snapshot", "ingested_at")


@dataclass(frozen=True)
class MirrorShape:
    """Which columns a mirror table has and how to check a source value for each."""

    table: str
    columns: dict[str, str]  # source column -> ClickHouse type
    snapshot: bool = False  # the mirror has the `snapshot` column (migration 0003..0008)

    @property
    def insert_columns(self) -> list[str]:
        return [*self.columns, "version", "is_deleted", "source_ts", *(["snapshot"] if self.snapshot else [])]


def _check_value(column: str, ch_type: str, value: Any) -> Any:
    nullable = ch_type.startswith("Nullable(")
    base = ch_type[len("Nullable(") : -1] if nullable else ch_type
    if value is None:
        if nullable:
            return None
        raise Rejected("invalid_field", f"column {column} ({ch_type}) is null - at $.{column}")
    if base == "UUID":
        if isinstance(value, str) and _UUID.match(value):
            return value
    elif base.startswith("DateTime64") or base.startswith("DateTime"):
        if isinstance(value, str):
            try:
                parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise Rejected("invalid_field", f"column {column}: {value!r} is not a timestamp") from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.UTC)
            return f"{parsed.timestamp():.6f}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value / 1_000_000:.6f}"  # Debezium MicroTimestamp
    elif base.startswith(("UInt", "Int")):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif base.startswith("Float"):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
    elif base.startswith(("String", "LowCardinality(String")):
        if isinstance(value, str):
            return value
    else:
        return value
    raise Rejected("invalid_field", f"column {column} expects {ch_type}, got {type(value).__name__} {value!r}")


_record_decoder = msgspec.json.Decoder(dict[str, Any])


@dataclass(slots=True)
class DecodedChange:
    row: bytes
    source_ms: int
    snapshot: bool = False  # read by Debezium's snapshot (op = r): its source time is the read, not a commit


def decode_change(raw: bytes | None, shape: MirrorShape) -> DecodedChange | None:
    """One Debezium record → JSONEachRow line for the mirror; None for a tombstone."""
    if raw is None:
        return None
    try:
        record = _record_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise _decode_error(raw, exc) from None
    if set(record) == {"schema", "payload"} and isinstance(record["payload"], dict):
        record = record["payload"]
    try:
        lsn = int(record["__lsn"])
        # the commit time in Postgres where the connector gives it (source.ts_ms), else when Debezium saw it
        ts_ms = int(record.get("__source_ts_ms") or record["__ts_ms"])
    except (KeyError, TypeError, ValueError):
        raise Rejected(
            "invalid_field", "record lacks integer __lsn and __ts_ms (unwrap add.fields=table,lsn,ts_ms)"
        ) from None
    source = {k: v for k, v in record.items() if not k.startswith("__")}
    unknown = sorted(set(source) - set(shape.columns))
    missing = sorted(set(shape.columns) - set(source))
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"unknown column(s) {unknown}")
        if missing:
            parts.append(f"missing column(s) {missing}")
        raise Rejected("schema_drift", f"{shape.table}: {'; '.join(parts)} — add a forward migration to the mirror")
    out = {col: _check_value(col, typ, source[col]) for col, typ in shape.columns.items()}
    out["version"] = lsn
    out["is_deleted"] = 1 if str(record.get("__deleted", "false")).lower() == "true" else 0
    out["source_ts"] = ms_to_text(ts_ms)
    snapshot = record.get("__op") == "r"
    if shape.snapshot:
        out["snapshot"] = int(snapshot)
    return DecodedChange(_encoder.encode(out), ts_ms, snapshot)
