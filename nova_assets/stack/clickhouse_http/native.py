"""Native output for a client that names its protocol version (`client_protocol_version`).

chDB writes Native as ClickHouse does for revision 0: no block info, and top-level
`DateTime('tz')` columns named plain `DateTime`. A client with a revision expects each block to
start with its block info and (from 54337) the time zone in the type name. chDB hands streamed
results over one block per fetch, so the block info goes in front of each; the type names are
corrected by walking the block, with the types (and their zones) from a DESCRIBE of the query,
asked only when a plain `DateTime` column is present.
"""

from __future__ import annotations

import re
from collections.abc import Callable

BLOCK_INFO = b"\x01\x00\x02\xff\xff\xff\xff\x00"  # is_overflows = 0, bucket_num = -1, end
WITH_TIME_ZONE = 54337  # DBMS_MIN_REVISION_WITH_TIME_ZONE_PARAMETER_IN_DATETIME_DATA_TYPE
WITH_CUSTOM_SERIALIZATION = 54454  # each column then carries a "has custom serialization" byte
PLAIN_DATETIME = b"\x08DateTime"

FIXED = {
    "UInt8": 1, "Int8": 1, "Bool": 1, "Enum8": 1, "Nothing": 1,
    "UInt16": 2, "Int16": 2, "Date": 2, "Enum16": 2, "BFloat16": 2,
    "UInt32": 4, "Int32": 4, "Float32": 4, "Date32": 4, "DateTime": 4, "IPv4": 4, "Time": 4, "Decimal32": 4,
    "UInt64": 8, "Int64": 8, "Float64": 8, "DateTime64": 8, "Time64": 8, "Decimal64": 8,
    "UInt128": 16, "Int128": 16, "UUID": 16, "IPv6": 16, "Decimal128": 16,
    "UInt256": 32, "Int256": 32, "Decimal256": 32,
}  # fmt: skip
TYPE = re.compile(r"^\s*([A-Za-z0-9_]+)\s*(?:\((.*)\))?\s*$", re.DOTALL)


class Unwalkable(Exception):
    """A type this walker cannot measure: the block is passed on without renaming."""


def _args(inner: str) -> list[str]:
    """Top-level comma-separated arguments of a type (quotes and parentheses respected)."""
    out, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(inner):
        if quote:
            if ch == quote and inner[i - 1] != "\\":
                quote = ""
        elif ch in "'`\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(inner[start:i].strip())
            start = i + 1
    if inner.strip():
        out.append(inner[start:].strip())
    return out


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _skip(type_name: str, buf: bytes, pos: int, rows: int) -> int:
    """The position after `rows` values of `type_name` serialized from `pos`."""
    match = TYPE.match(type_name)
    if match is None:
        raise Unwalkable(type_name)
    name, inner = match.group(1), match.group(2) or ""
    if name in FIXED:
        return pos + FIXED[name] * rows
    if name == "Decimal":
        precision = int(_args(inner)[0])
        return pos + (4 if precision <= 9 else 8 if precision <= 18 else 16 if precision <= 38 else 32) * rows
    if name == "FixedString":
        return pos + int(inner) * rows
    if name == "String":
        for _ in range(rows):
            size, pos = _varint(buf, pos)
            pos += size
        return pos
    if name == "Nullable":
        return _skip(inner, buf, pos + rows, rows)
    if name in ("Array", "Map"):
        if rows == 0:
            return pos
        total = int.from_bytes(buf[pos + 8 * (rows - 1) : pos + 8 * rows], "little")
        nested = inner if name == "Array" else f"Tuple({inner})"
        return _skip(nested, buf, pos + 8 * rows, total)
    if name == "Tuple":
        for element in _args(inner):
            parts = element.split(" ", 1)  # named elements: `name Type`
            element_type = parts[1] if len(parts) == 2 and TYPE.match(parts[1]) and "(" not in parts[0] else element
            pos = _skip(element_type, buf, pos, rows)
        return pos
    raise Unwalkable(type_name)


def rewrite_block(block: bytes, revision: int, types: list[str] | None) -> bytes:
    """One Native block as a client of `revision` reads it."""
    out = bytearray(BLOCK_INFO)
    if types is None and revision < WITH_CUSTOM_SERIALIZATION:
        return bytes(out + block)
    try:
        columns, pos = _varint(block, 0)
        rows, pos = _varint(block, pos)
        out += block[:pos]
        for index in range(columns):
            size, start = _varint(block, pos)
            name_end = start + size
            size, type_start = _varint(block, name_end)
            type_end = type_start + size
            type_name = block[type_start:type_end].decode()
            wanted = types[index] if types is not None and index < len(types) else type_name
            out += block[pos:name_end]
            if wanted != type_name and type_name == "DateTime" and wanted.startswith("DateTime("):
                encoded = wanted.encode()
                out += _uvarint(len(encoded)) + encoded
            else:
                out += block[name_end:type_end]
            if revision >= WITH_CUSTOM_SERIALIZATION:
                out.append(0)
            pos = _skip(type_name if types is None else wanted, block, type_end, rows)
            out += block[type_end:pos]
        return bytes(out + block[pos:])
    except (Unwalkable, IndexError, ValueError):
        if revision >= WITH_CUSTOM_SERIALIZATION:
            raise
        return BLOCK_INFO + block


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def transformer(revision: int, describe: Callable[[], list[str]]) -> Callable[[bytes], bytes]:
    """Per-block rewriting for one query; `describe` gives its column types, asked at most once."""
    types: list[list[str] | None] = []

    def transform(block: bytes) -> bytes:
        if not block:
            return block
        if not types:
            wants_zones = revision >= WITH_TIME_ZONE and PLAIN_DATETIME in block
            try:
                types.append(describe() if wants_zones else None)
            except Exception:
                types.append(None)
        return rewrite_block(block, revision, types[0])

    return transform
