"""How each SLO is measured: cheap queries over the last minutes, never a full scan."""

from __future__ import annotations

import time

from clickhouse_connect.driver.client import Client
from confluent_kafka import TopicPartition

from nova_assets.core.cache import stats
from nova_assets.core.cache.warming import fetch_feeds_json
from nova_assets.core.ingestion.offsets import expired_unloaded, partition_lags
from nova_assets.core.ports import ClickHouse, Kafka, RedisClient
from nova_assets.core.schema.queries import USER_TIMELINE
from nova_assets.topics import MIRROR_TABLES


class Measurement(dict):
    """value (None when nothing to measure), sample_size, plus details for the check's metadata."""


def event_to_visible(client: Client, window_s: int = 300) -> Measurement:
    value, n = client.query(
        "SELECT quantileExactIf(0.95)(toFloat64(ingested_at - event_time), 1), count() FROM events "
        "WHERE ingested_at >= now64(3) - toIntervalSecond({w:UInt32})",
        parameters={"w": window_s},
    ).result_rows[0]
    return Measurement(value=float(value) if n else None, sample_size=int(n), window_s=window_s)


def kafka_lag(kafka: Kafka) -> tuple[Measurement, Measurement]:
    """Unconsumed messages, and the age of the oldest unconsumed one (reads one message per lagging partition)."""
    consumer = kafka.consumer(**{"enable.partition.eof": False})
    try:
        lags = [p for p in partition_lags(consumer, timeout_s=kafka.timeout_s, verify_s=0.5)]
        total = sum(p.lag for p in lags)
        oldest_ms: float | None = None
        for p in lags:
            if p.lag <= 0:
                continue
            consumer.assign([TopicPartition(p.topic, p.partition, p.start)])
            msgs = consumer.consume(num_messages=1, timeout=2.0)
            if msgs and msgs[0].error() is None:
                _kind, ts = msgs[0].timestamp()
                if ts > 0:
                    oldest_ms = ts if oldest_ms is None else min(oldest_ms, ts)
        age = max(0.0, time.time() - oldest_ms / 1000) if oldest_ms is not None else 0.0
    finally:
        consumer.close()
    return (
        Measurement(value=age, sample_size=len(lags), partitions_lagging=sum(p.lag > 0 for p in lags)),
        Measurement(value=float(total), sample_size=len(lags)),
    )


def kafka_continuity(clickhouse: ClickHouse, kafka: Kafka) -> tuple[list[str], list[tuple[str, int]], list[str]]:
    """Topic resets of the last day ("topic: old -> new at time"), messages recorded as lost to
    retention per partition, and partitions whose committed offset retention has already passed."""
    resets = [
        f"{topic}: {old} -> {new} at {seen:%Y-%m-%d %H:%M:%S}"
        for topic, old, new, seen in clickhouse.query(
            "SELECT topic, previous, incarnation, seen_at FROM kafka_incarnations "
            "WHERE previous != '' AND seen_at >= now64(3) - INTERVAL 1 DAY ORDER BY seen_at"
        ).result_rows
    ]
    lost = [
        (f"{topic}:{partition}", int(count))
        for topic, partition, count in clickhouse.query(
            "SELECT topic, partition, sum(JSONExtractInt(payload, 'count')) FROM dead_letters "
            "WHERE error_kind = 'expired' AND received_at >= now64(3) - INTERVAL 1 DAY GROUP BY topic, partition "
            "ORDER BY topic, partition"
        ).result_rows
    ]
    consumer = kafka.consumer()
    try:
        lags = partition_lags(consumer, timeout_s=kafka.timeout_s)
        expiring = [f"{p.topic}:{p.partition}" for p in expired_unloaded(lags)]
    finally:
        consumer.close()
    return resets, lost, expiring


def events_query(client: Client) -> Measurement:
    user = client.query("SELECT user_id FROM events WHERE ingested_at >= now64(3) - INTERVAL 1 DAY LIMIT 1").result_rows
    if not user:
        return Measurement(value=None, sample_size=0, note="no recent events to probe")
    started = time.perf_counter()
    client.query(USER_TIMELINE, parameters={"user_id": user[0][0], "since": time.time() - 86400, "limit": 100})
    return Measurement(value=(time.perf_counter() - started) * 1000, sample_size=1, query="user timeline (PREWHERE)")


def cdc_lag(client: Client, heartbeat_interval_s: float = 10.0, window_s: int = 300) -> Measurement:
    """max(P95 commit→visible of recent streamed changes, staleness beyond the heartbeat interval).

    Rows of Debezium's snapshot (`snapshot = 1`) are a backfill of what existed before CDC started:
    their source time is when they were read, so they are counted apart, not judged as lag."""
    union = " UNION ALL ".join(f"SELECT ingested_at, source_ts, snapshot FROM {t}" for t in MIRROR_TABLES)
    p95, n, last, snapshot_rows = client.query(
        "SELECT quantileExactIf(0.95)(toFloat64(ingested_at - source_ts), snapshot = 0), countIf(snapshot = 0),"
        f" maxIf(source_ts, snapshot = 0), countIf(snapshot = 1) FROM ({union})"
        " WHERE ingested_at >= now64(3) - toIntervalSecond({w:UInt32})",
        parameters={"w": window_s},
    ).result_rows[0]
    newest = client.query("SELECT max(source_ts), count() FROM debezium_heartbeat").result_rows[0]
    if not n and not newest[1]:
        return Measurement(value=None, sample_size=0, note="no CDC changes or heartbeats yet")
    newest_ts = max(t for t in (last if n else None, newest[0] if newest[1] else None) if t is not None)
    staleness = max(0.0, time.time() - newest_ts.timestamp() - heartbeat_interval_s)
    value = max(float(p95) if n else 0.0, staleness)
    return Measurement(
        value=value,
        sample_size=int(n),
        p95_commit_to_visible_s=float(p95) if n else None,
        staleness_s=round(staleness, 3),
        snapshot_rows=int(snapshot_rows),
    )


def feed_query(client: Client) -> Measurement:
    row = client.query(
        "SELECT version, (SELECT any(user_id) FROM feed_recommendations WHERE version = v.version) "
        "FROM (SELECT max(version) AS version, count() AS c FROM feed_versions) AS v WHERE c > 0"
    ).result_rows
    if not row:
        return Measurement(value=None, sample_size=0, note="no published version yet")
    version, user = row[0]
    started = time.perf_counter()
    fetch_feeds_json(client, int(version), [user])  # the read path's own miss query
    return Measurement(value=(time.perf_counter() - started) * 1000, sample_size=1, version=int(version))


def coverage(client: Client) -> Measurement:
    """Share of the users active in the last day, and visible before the published version was
    computed, who have a personal feed in it.

    A user first seen after the recompute started cannot be in it: counting them would fail the
    check between two scheduled recomputes while a growing demo or a launch brings new users.
    """
    version, active, covered = client.query(
        "WITH (SELECT max(version) FROM feed_versions) AS v "
        "SELECT v, count(), countIf(has_feed) FROM ("
        " SELECT a.user_id, a.user_id IN (SELECT user_id FROM feed_recommendations WHERE version = v) AS has_feed"
        " FROM (SELECT DISTINCT user_id FROM events WHERE event_time >= now() - INTERVAL 1 DAY"
        "       AND ingested_at < fromUnixTimestamp64Milli(toInt64(v))) AS a)"
    ).result_rows[0]
    if not version:  # nothing published: every active user goes without a feed
        active = client.query("SELECT uniq(user_id) FROM events WHERE event_time >= now() - INTERVAL 1 DAY").result_rows
        n = int(active[0][0])
        return Measurement(value=0.0 if n else None, sample_size=n, covered=0, note="no published version")
    if not active:
        return Measurement(value=None, sample_size=0, note="no users active before the published version")
    return Measurement(value=covered / active, sample_size=int(active), covered=int(covered), version=int(version))


def cache_stats(cache: RedisClient, minutes: int = 5) -> tuple[Measurement, Measurement]:
    """Hit rate and hit latency P95 from the read path's per-minute counters in Redis."""
    counters = stats.totals(cache, minutes)
    hits = stats.hits(counters)
    reads = hits + counters.get("misses", 0)
    rate = Measurement(value=hits / reads if reads else None, sample_size=reads, hits=hits, window_min=minutes)
    latency = Measurement(value=stats.hit_p95_ms(counters), sample_size=hits, window_min=minutes)
    return rate, latency
