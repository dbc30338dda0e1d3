"""Shared benchmark helpers: percentiles and the report format (a table, then one JSON line)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from nova_assets import settings
from nova_assets.core.process import free_port
from nova_assets.core.quantiles import percentile  # noqa: F401 - the benchmarks' percentile
from nova_assets.resources import ClickHouseResource
from nova_assets.stack.sql_services import ClickHouseService

#: NOVA_BENCH_SMOKE=1: every benchmark at a tiny size, so `make test` runs its code on every change
#: (its figures then mean nothing; the sizes are the benchmark's own choice)
SMOKE = settings.env_bool("NOVA_BENCH_SMOKE")


@contextlib.contextmanager
def clickhouse_server(home: Path) -> Iterator[ClickHouseResource]:
    """A private local ClickHouse server (the stack's own) under `home`, for a benchmark's processes."""
    service = ClickHouseService(home, free_port())
    service.start_and_wait()
    try:
        yield ClickHouseResource(url=service.url())
    finally:
        service.stop()


def report(title: str, rows: list[tuple[str, str, str]], summary: dict[str, Any], as_json: bool) -> None:
    """Print `metric | value | compared with` rows and, with --json, the summary as the last line."""
    width = max(len(r[0]) for r in rows)
    print(title)
    for metric, value, note in rows:
        print(f"  {metric:<{width}}  {value:>14}  {note}")
    if as_json:
        print(orjson.dumps(summary).decode())
