"""Shared benchmark helpers: percentiles and the report format (a table, then one JSON line)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import orjson


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return float(values[0])
    return float(statistics.quantiles(values, n=1000, method="inclusive")[min(998, max(0, int(q * 10) - 1))])


def report(title: str, rows: list[tuple[str, str, str]], summary: dict[str, Any], as_json: bool) -> None:
    """Print `metric | value | compared with` rows and, with --json, the summary as the last line."""
    width = max(len(r[0]) for r in rows)
    print(title)
    for metric, value, note in rows:
        print(f"  {metric:<{width}}  {value:>14}  {note}")
    if as_json:
        print(orjson.dumps(summary).decode())
