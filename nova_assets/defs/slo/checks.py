"""The SLOs and data-quality rules as asset checks: the Dagster UI is the team's SLO dashboard."""

from collections.abc import Iterator

import dagster as dg

from nova_assets.core.slo import measure
from nova_assets.core.slo.declaration import Slo, slos
from nova_assets.resources.clickhouse import ClickHouseResource
from nova_assets.resources.kafka import KafkaResource
from nova_assets.resources.redis import RedisResource
from nova_assets.topics import APP_TABLES

MIRRORS = APP_TABLES


def _detail(name: str, value: object) -> object:
    """A measurement detail: settings (windows, limits) as text, measured figures as numbers."""
    if "window" in name or "limit" in name or not isinstance(value, int | float | str | bool):
        return dg.MetadataValue.text(str(value))
    return value


def slo_result(
    slo: Slo, m: measure.Measurement, asset: str | None = None, check: str | None = None
) -> dg.AssetCheckResult:
    """Grade a measurement against its SLO: target/acceptable pass, beyond fails WARN, beyond critical ERROR."""
    details = {k: v for k, v in m.items() if k not in ("value", "sample_size") and v is not None}
    metadata: dict[str, dg.RawMetadataValue] = {
        "slo": slo.name,
        "unit": slo.unit,
        # thresholds and windows are text: the check page then plots only what moves (measured, sample_size)
        "target": dg.MetadataValue.text(f"{slo.target:g}"),
        "acceptable": dg.MetadataValue.text(f"{slo.acceptable:g}"),
        "critical": dg.MetadataValue.text(f"{slo.critical:g}"),
        "higher_is_better": slo.higher_is_better,
        "sample_size": int(m.get("sample_size") or 0),
        "window": slo.window,
        "source": slo.source,
        **{f"detail_{k}": _detail(k, v) for k, v in details.items()},
    }
    value = m.get("value")
    kwargs = {"asset_key": asset, "check_name": check} if asset else {}
    if value is None:
        return dg.AssetCheckResult(
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"nothing to measure ({m.get('note', 'no data in window')})",
            metadata={**metadata, "grade": "no data"},
            **kwargs,
        )
    grade = slo.grade(float(value))
    op = ">=" if slo.higher_is_better else "<="
    texts = {
        "target": f"{value:.4g} {slo.unit} meets target ({op} {slo.target:g})",
        "acceptable": f"WARN: {value:.4g} {slo.unit} misses target {slo.target:g}, "
        f"within acceptable ({op} {slo.acceptable:g})",
        "breach": f"{value:.4g} {slo.unit} is beyond acceptable ({slo.acceptable:g})",
        "critical": f"{value:.4g} {slo.unit} is beyond critical ({slo.critical:g})",
    }
    return dg.AssetCheckResult(
        passed=grade in ("target", "acceptable"),
        severity=dg.AssetCheckSeverity.ERROR if grade == "critical" else dg.AssetCheckSeverity.WARN,
        description=texts[grade],
        metadata={**metadata, "measured": round(float(value), 6), "grade": grade},
        **kwargs,
    )


@dg.asset_check(asset="events", name="event_to_visible_p95", description="P95 of ingested_at - event_time, last 5 min.")
def event_to_visible_check(clickhouse: ClickHouseResource) -> dg.AssetCheckResult:
    with clickhouse.session() as client:
        return slo_result(slos()["event_to_visible_p95_s"], measure.event_to_visible(client))


@dg.asset_check(asset="events", name="kafka_consumer_lag", description="Unconsumed messages and their age.")
def kafka_lag_check(kafka: KafkaResource) -> dg.AssetCheckResult:
    seconds, messages = measure.kafka_lag(kafka)
    table = slos()
    by_age = slo_result(table["kafka_lag_seconds"], seconds)
    by_count = slo_result(table["kafka_lag_messages"], messages)
    order = {dg.AssetCheckSeverity.WARN: 0, dg.AssetCheckSeverity.ERROR: 1}
    worst = min(
        (by_age, by_count),
        key=lambda r: (r.passed, -order[r.severity]),
    )
    return dg.AssetCheckResult(
        passed=by_age.passed and by_count.passed,
        severity=worst.severity,
        description=f"age: {by_age.description}; messages: {by_count.description}",
        metadata={
            **{f"seconds_{k}": v for k, v in by_age.metadata.items()},
            **{f"messages_{k}": v for k, v in by_count.metadata.items()},
        },
    )


@dg.asset_check(
    asset="events",
    name="kafka_log_continuity",
    description="No Kafka topic forgotten or re-created, and no message lost to retention, in the last day.",
)
def kafka_continuity_check(clickhouse: ClickHouseResource, kafka: KafkaResource) -> dg.AssetCheckResult:
    """Resets are handled (the new log loads from its start) but worth a look: WARN. Messages that
    retention removed before they were loaded are lost: ERROR, whether recorded or about to be."""
    resets, lost, expiring = measure.kafka_continuity(clickhouse, kafka)
    parts = []
    if lost:
        parts.append(f"{sum(n for _t, n in lost)} message(s) lost to retention ({', '.join(t for t, _n in lost)})")
    if expiring:
        parts.append(f"retention passed the loaded position on {', '.join(expiring)} (the next run records the loss)")
    if resets:
        parts.append(f"{len(resets)} topic reset(s): " + "; ".join(resets))
    return dg.AssetCheckResult(
        passed=not parts,
        severity=dg.AssetCheckSeverity.ERROR if lost or expiring else dg.AssetCheckSeverity.WARN,
        description="; ".join(parts) or "every topic is the log it was, and nothing expired unloaded",
        metadata={
            "topic_resets": len(resets),
            "lost_to_retention": sum(n for _t, n in lost),
            "partitions_expiring": len(expiring),
            "resets": dg.MetadataValue.text("; ".join(resets) or "none"),
            "window": dg.MetadataValue.text("1 day"),
        },
    )


@dg.asset_check(asset="events", name="events_query_latency", description="User-timeline query probe (PREWHERE).")
def events_query_check(clickhouse: ClickHouseResource) -> dg.AssetCheckResult:
    with clickhouse.session() as client:
        return slo_result(slos()["events_query_ms"], measure.events_query(client))


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec("cdc_lag", asset=m, description="Postgres commit → visible in ClickHouse (heartbeat-aware).")
        for m in MIRRORS
    ],
    name="cdc_lag_checks",
)
def cdc_lag_checks(clickhouse: ClickHouseResource) -> Iterator[dg.AssetCheckResult]:
    with clickhouse.session() as client:
        m = measure.cdc_lag(client)
    for mirror in MIRRORS:
        yield slo_result(slos()["cdc_lag_s"], m, asset=mirror, check="cdc_lag")


@dg.asset_check(asset="feed_recommendations", name="feed_query_latency", description="Feed read from ClickHouse.")
def feed_query_check(clickhouse: ClickHouseResource) -> dg.AssetCheckResult:
    with clickhouse.session() as client:
        return slo_result(slos()["feed_query_ms"], measure.feed_query(client))


@dg.asset_check(asset="feed_recommendations", name="active_user_coverage", description="Active users with a feed.")
def coverage_check(clickhouse: ClickHouseResource) -> dg.AssetCheckResult:
    with clickhouse.session() as client:
        return slo_result(slos()["active_user_coverage"], measure.coverage(client))


@dg.asset_check(asset="feed_cache", name="cache_hit_rate", description="Read-path hits / reads, last 5 min.")
def cache_hit_rate_check(redis: RedisResource) -> dg.AssetCheckResult:
    rate, _latency = measure.cache_stats(redis.client())
    return slo_result(slos()["cache_hit_rate"], rate)


@dg.asset_check(asset="feed_cache", name="cache_hit_latency", description="P95 latency of cache hits, last 5 min.")
def cache_hit_latency_check(redis: RedisResource) -> dg.AssetCheckResult:
    _rate, latency = measure.cache_stats(redis.client())
    return slo_result(slos()["cache_hit_latency_p95_ms"], latency)


# --- data quality: any violation is an ERROR -----------------------------------------------------


def _quality(asset: str, name: str, description: str, sql: str, what: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=asset, name=name, description=description)
    def _check(clickhouse: ClickHouseResource) -> dg.AssetCheckResult:
        count, sample = clickhouse.query(sql).result_rows[0]
        return dg.AssetCheckResult(
            passed=count == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            description="none" if count == 0 else f"{count} {what}",
            metadata={"violations": int(count), "sample": str(sample), "rule": description},
        )

    return _check


quality_checks = [
    _quality(
        "events",
        "no_duplicate_event_ids",
        "No event_id loaded twice (events ingested in the last day).",
        "SELECT count(), any(event_id) FROM (SELECT event_id FROM events "
        "WHERE ingested_at >= now64(3) - INTERVAL 1 DAY GROUP BY event_id HAVING count() > 1)",
        "duplicated event_id(s)",
    ),
    _quality(
        "events",
        "no_future_events",
        "No event_time more than 60 s ahead of the ClickHouse clock.",
        "SELECT count(), any(event_id) FROM events WHERE event_time > now64(3) + INTERVAL 60 SECOND "
        "AND ingested_at >= now64(3) - INTERVAL 1 DAY",
        "event(s) from the future",
    ),
    _quality(
        "post_metrics_1h",
        "mv_totals_match_events",
        "Hourly MV totals equal totals recomputed from events (last 3 full hours).",
        "SELECT count(), any(post_id) FROM ("
        " SELECT post_id, window_start, sum(views) AS v, sum(likes) AS l, sum(clicks) AS c FROM post_metrics_1h"
        " WHERE window_start >= toStartOfHour(now()) - INTERVAL 3 HOUR AND window_start < toStartOfHour(now())"
        " GROUP BY post_id, window_start) AS mv FULL OUTER JOIN ("
        " SELECT post_id, toStartOfHour(event_time) AS window_start, countIf(action = 'view') AS v,"
        " countIf(action = 'like') AS l, countIf(action = 'click') AS c FROM events"
        " WHERE event_time >= toStartOfHour(now()) - INTERVAL 3 HOUR AND event_time < toStartOfHour(now())"
        " GROUP BY post_id, window_start) AS ev USING (post_id, window_start)"
        " WHERE mv.v != ev.v OR mv.l != ev.l OR mv.c != ev.c",
        "post-hour(s) where the MV differs from events",
    ),
    _quality(
        "feed_recommendations",
        "no_deleted_posts_recommended",
        "The published version recommends no post that was deleted before it was computed (one deleted "
        "later is left out when feeds are read and warmed).",
        "SELECT count(), any(post_id) FROM feed_recommendations"
        " WHERE version = (SELECT max(version) FROM feed_versions)"
        " AND post_id IN (SELECT id FROM posts WHERE is_deleted = 1"
        " AND ingested_at < fromUnixTimestamp64Milli(toInt64((SELECT max(version) FROM feed_versions)), 'UTC'))",
        "recommended row(s) of deleted posts",
    ),
]

slo_checks = [
    event_to_visible_check,
    kafka_lag_check,
    kafka_continuity_check,
    events_query_check,
    cdc_lag_checks,
    feed_query_check,
    coverage_check,
    cache_hit_rate_check,
    cache_hit_latency_check,
    *quality_checks,
]
