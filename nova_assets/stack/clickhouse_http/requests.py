"""Small pieces of one request's handling: its protocol revision, external tables' columns, result types."""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable
from typing import Any

from nova_assets.stack.clickhouse_http.engine import Engine, fetch
from nova_assets.stack.clickhouse_http.errors import BAD_ARGUMENTS, ClickHouseError
from nova_assets.stack.clickhouse_http.protocol import Query


def malloc_trim() -> None:
    """glibc keeps freed heap pages; malloc_trim returns them (a no-op elsewhere)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def next_block(streaming: Any, transform: Callable[[bytes], bytes] | None) -> bytes:
    block = fetch(streaming)
    return transform(block) if transform is not None and block else block


def describe(engine: Engine, query: Query) -> list[str]:
    """The result's column types, zones included (chDB's revision-0 Native drops them).

    Asked on a connection of its own: the query's connection is busy streaming.
    """
    conn = engine.open()
    try:
        conn.prepare(query.database, query.settings)
        rows = conn.run(f"DESCRIBE ({query.sql})", "TabSeparatedRaw", query.params).bytes().decode()
    finally:
        conn.close()
    return [line.split("\t")[1] for line in rows.splitlines() if "\t" in line]


def revision(query: Query) -> int:
    return as_int(query.args.get("client_protocol_version"), 0)


def as_int(value: str | None, default: int) -> int:
    try:
        return int(value) if value else default
    except ValueError:
        raise ClickHouseError(BAD_ARGUMENTS, f"Not a number: {value!r}", "BAD_ARGUMENTS") from None


def structure(name: str, values: dict[str, str]) -> str:
    """An external table's columns: `<name>_structure`, or `<name>_types` named _1, _2, ..."""
    if values.get(f"{name}_structure"):
        return values[f"{name}_structure"]
    if values.get(f"{name}_types"):
        types = [t.strip() for t in values[f"{name}_types"].split(",") if t.strip()]
        return ", ".join(f"_{i} {t}" for i, t in enumerate(types, 1))
    raise ClickHouseError(
        BAD_ARGUMENTS, f"Neither structure nor types have not been provided for external table {name}", "BAD_ARGUMENTS"
    )
