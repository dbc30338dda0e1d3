"""The one quantile summary: P50/P95/P99 and max (run metadata, benchmarks, reports)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def summary(values: Sequence[float] | np.ndarray, scale: float = 1.0, suffix: str = "") -> dict[str, float]:
    """{p50, p95, p99, max}`suffix` of `values` multiplied by `scale` (NaN for none), linear interpolation."""
    arr = np.asarray(values, dtype=np.float64)
    keys = [f"{k}{suffix}" for k in ("p50", "p95", "p99", "max")]
    if not arr.size:
        return dict.fromkeys(keys, float("nan"))
    p50, p95, p99 = np.percentile(arr, [50, 95, 99]) * scale
    return dict(zip(keys, (float(p50), float(p95), float(p99), float(arr.max() * scale)), strict=True))


def percentile(values: Sequence[float] | np.ndarray, q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; NaN for no values."""
    arr = np.asarray(values, dtype=np.float64)
    return float(np.percentile(arr, q)) if arr.size else float("nan")
