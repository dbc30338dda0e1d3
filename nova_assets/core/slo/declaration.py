"""The one declaration of Nova's SLOs, mirroring the guide's "Performance Benchmarks" table.

A measured value within `target` passes; within `acceptable` passes with a warning note; beyond
`acceptable` fails with WARN; beyond `critical` fails with ERROR. Thresholds can be overridden
with NOVA_SLO_OVERRIDES, a JSON object such as `{"event_to_visible_p95_s": {"target": 2}}`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import orjson

from nova_assets import settings
from nova_assets.errors import ConfigError

OVERRIDES = settings.SLO_OVERRIDES


@dataclass(frozen=True)
class Slo:
    name: str
    asset: str
    unit: str
    target: float
    acceptable: float
    critical: float
    higher_is_better: bool = False
    window: str = ""
    source: str = ""  # where the numbers come from (the guide's table, or ours where it is silent)

    def grade(self, value: float) -> str:
        """`target`, `acceptable`, `breach` (fail WARN) or `critical` (fail ERROR)."""
        better = (lambda a, b: a >= b) if self.higher_is_better else (lambda a, b: a <= b)
        if better(value, self.target):
            return "target"
        if better(value, self.acceptable):
            return "acceptable"
        if better(value, self.critical):
            return "breach"
        return "critical"


SLOS: tuple[Slo, ...] = (
    Slo("event_to_visible_p95_s", "events", "s", 3, 5, 10, window="5 min", source="guide: Event-to-Visible"),
    Slo("kafka_lag_seconds", "events", "s", 3, 5, 10, window="now", source="ours: as event-to-visible"),
    Slo(
        "kafka_lag_messages",
        "events",
        "messages",
        50_000,
        200_000,
        1_000_000,
        window="now",
        source="ours: ~5 s, ~20 s, ~100 s at 10k/s",
    ),
    Slo("events_query_ms", "events", "ms", 100, 250, 500, window="probe", source="guide: ClickHouse Query (events)"),
    Slo("cdc_lag_s", "posts", "s", 2, 5, 30, window="5 min", source="guide: CDC Lag"),
    Slo(
        "feed_query_ms",
        "feed_recommendations",
        "ms",
        500,
        800,
        1000,
        window="probe",
        source="guide: Feed API Latency (ClickHouse)",
    ),
    Slo("active_user_coverage", "feed_recommendations", "ratio", 0.95, 0.90, 0.80, True, "1 day", "ours"),
    Slo("cache_hit_rate", "feed_cache", "ratio", 0.95, 0.90, 0.80, True, "5 min", "guide: Cache Hit Rate"),
    Slo(
        "cache_hit_latency_p95_ms",
        "feed_cache",
        "ms",
        100,
        150,
        300,
        window="5 min",
        source="guide: Feed API Latency (cache hit)",
    ),
)


def slos() -> dict[str, Slo]:
    """The declaration with NOVA_SLO_OVERRIDES applied (read at each evaluation)."""
    table = {s.name: s for s in SLOS}
    raw = settings.env_str(OVERRIDES)
    if not raw:
        return table
    try:
        overrides = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(OVERRIDES, raw, f"is not JSON ({exc})") from None
    if not isinstance(overrides, dict):
        raise ConfigError(OVERRIDES, raw, "must be a JSON object of {slo_name: {target|acceptable|critical: number}}")
    for name, change in overrides.items():
        if name not in table:
            raise ConfigError(OVERRIDES, raw, f"names unknown SLO {name!r}; known: {', '.join(table)}")
        allowed = {"target", "acceptable", "critical"}
        if not isinstance(change, dict) or not set(change) <= allowed:
            raise ConfigError(OVERRIDES, raw, f"{name}: only {sorted(allowed)} can be overridden")
        values: dict[str, Any] = {k: float(v) for k, v in change.items()}
        table[name] = dataclasses.replace(table[name], **values)
    return table
