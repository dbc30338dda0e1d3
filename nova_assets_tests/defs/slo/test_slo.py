"""SLO checks against a real, healthy pipeline (Tansu → loader → chDB → recommendations → Redis → read path),
then each breach induced for real."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import orjson
import pytest

from nova_assets.core.cache.warming import warm
from nova_assets.core.ingestion.loader import IngestSettings, Loader
from nova_assets.core.process import free_port
from nova_assets.core.recommendations.scoring import ScoringParams, recompute
from nova_assets.core.slo.declaration import SLOS, slos
from nova_assets.defs import cache, ingestion, recommendations, schema, slo
from nova_assets.defs.slo.alerts import slo_alert_sensor
from nova_assets.generate.events import produce_events
from nova_assets.resources import ClickHouseResource, KafkaResource, RedisResource
from nova_assets.serving import FeedService

UTC = dt.UTC


class Pipeline:
    def __init__(self, ch: ClickHouseResource, kafka: KafkaResource, redis_resource: RedisResource) -> None:
        self.ch, self.kafka, self.redis = ch, kafka, redis_resource
        self.defs = dg.Definitions.merge(
            schema.defs,
            ingestion.defs,
            recommendations.defs,
            cache.defs,
            slo.defs,
            dg.Definitions(resources={"clickhouse": ch, "kafka": kafka, "redis": redis_resource}),
        )

    def checks(self, instance: dg.DagsterInstance) -> dict[str, dg.AssetCheckEvaluation]:
        result = self.defs.resolve_job_def("slo_checks").execute_in_process(instance=instance, raise_on_error=False)
        return {f"{ev.asset_key.to_user_string()}:{ev.check_name}": ev for ev in result.get_asset_check_evaluations()}

    def cdc_heartbeat(self, seconds_ago: float) -> None:
        now = time.time()
        self.ch.insert(
            "debezium_heartbeat",
            [[1, dt.datetime.fromtimestamp(now - seconds_ago, UTC), int(now * 1000), 0,
              dt.datetime.fromtimestamp(now - seconds_ago, UTC)]],
            ["id", "ts", "version", "is_deleted", "source_ts"],
        )  # fmt: skip


@pytest.fixture
def pipeline(clickhouse: ClickHouseResource, kafka: KafkaResource, redis_resource: RedisResource) -> Iterator[Pipeline]:
    produce_events(kafka, rate=0, duration_s=60, total=3000)
    Loader(clickhouse, kafka, IngestSettings(idle_exit_seconds=1.0)).run()
    with clickhouse.session() as client:
        recompute(client, ScoringParams(feed_size=20))
        warm(client, redis_resource.client(), users=5000)  # every reader below is warmed
    p = Pipeline(clickhouse, kafka, redis_resource)
    p.cdc_heartbeat(seconds_ago=0.5)
    users = [r[0] for r in clickhouse.query("SELECT DISTINCT user_id FROM events LIMIT 50").result_rows]
    reader = FeedService(clickhouse, redis_resource.client(), stats_flush_s=0.05)
    for _ in range(3):
        reader.get_feeds(users)
    reader.close()
    yield p


def test_healthy_pipeline_passes_every_check(pipeline: Pipeline, instance: dg.DagsterInstance) -> None:
    results = pipeline.checks(instance)
    assert len(results) == 17  # 7 SLO checks (cdc_lag on each of 5 mirrors), Kafka continuity, 4 data-quality
    failed = {k: (r.description, r.metadata.get("measured")) for k, r in results.items() if not r.passed}
    assert failed == {}
    e2v = results["events:event_to_visible_p95"]
    assert e2v.metadata["grade"].value == "target" and e2v.metadata["sample_size"].value == 3000
    assert e2v.metadata["target"].value == "3" and e2v.metadata["critical"].value == "10"
    assert results["feed_cache:cache_hit_rate"].metadata["measured"].value >= 0.95


def _failed(results: dict[str, dg.AssetCheckEvaluation], key: str) -> dg.AssetCheckEvaluation:
    result = results[key]
    assert not result.passed, f"{key} unexpectedly passed: {result.description}"
    return result


class _Hook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(orjson.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


def test_each_breach_fails_its_check_and_alerts(
    pipeline: Pipeline, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    ch = pipeline.ch
    # delayed ingestion: events that took 20 s to become visible
    late = dt.datetime.now(UTC) - dt.timedelta(seconds=20)
    cols = ["event_id", "event_time", "user_id", "post_id", "author_id", "action", "dwell_ms", "device", "app_ver"]
    ch.insert("events", [[uuid.uuid4(), late, uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), "view", 1, "web", "1"]
                         for _ in range(5000)], cols)  # fmt: skip
    # CDC stopped two minutes ago: the heartbeat no longer moves
    ch.command("TRUNCATE TABLE debezium_heartbeat")
    pipeline.cdc_heartbeat(seconds_ago=120)
    # a duplicated event
    dup = ch.query("SELECT event_id, event_time, user_id, post_id, author_id FROM events LIMIT 1").result_rows[0]
    ch.insert("events", [[*dup, "view", 1, "web", "1"]], cols)
    # the cache was flushed: every read is a miss
    pipeline.redis.client().flushdb()
    reader = FeedService(ch, pipeline.redis.client(), stats_flush_s=0.05)
    users = [r[0] for r in ch.query("SELECT DISTINCT user_id FROM events LIMIT 20").result_rows]
    for user in users:
        reader.get_feed(user)
    reader.close()

    hook = ThreadingHTTPServer(("127.0.0.1", free_port()), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    monkeypatch.setenv("NOVA_ALERT_WEBHOOK", f"http://127.0.0.1:{hook.server_address[1]}/alerts")
    try:
        results = pipeline.checks(instance)
        e2v = _failed(results, "events:event_to_visible_p95")
        assert e2v.severity == dg.AssetCheckSeverity.ERROR and e2v.metadata["measured"].value > 10
        cdc = _failed(results, "posts:cdc_lag")
        assert cdc.severity == dg.AssetCheckSeverity.ERROR and cdc.metadata["detail_staleness_s"].value > 30
        assert _failed(results, "events:no_duplicate_event_ids").metadata["violations"].value == 1
        hit = _failed(results, "feed_cache:cache_hit_rate")
        assert hit.severity == dg.AssetCheckSeverity.ERROR and hit.metadata["measured"].value == 0.0

        context = dg.build_sensor_context(instance=instance, definitions=pipeline.defs)
        slo_alert_sensor(context)
        alerted = {a["check"] for a in _Hook.received if a["kind"] == "asset_check"}
        assert {"events:event_to_visible_p95", "posts:cdc_lag", "events:no_duplicate_event_ids"} <= alerted
        first = next(a for a in _Hook.received if a["check"] == "events:event_to_visible_p95")
        assert first["severity"] == "ERROR" and first["metadata"]["grade"] == "critical"
    finally:
        hook.shutdown()


def test_thresholds_come_from_the_one_declaration(
    pipeline: Pipeline, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert {s.name for s in SLOS} == set(slos())
    # a query "slower" than a tiny threshold, and a lag beyond a tiny one
    monkeypatch.setenv(
        "NOVA_SLO_OVERRIDES",
        orjson.dumps(
            {
                "events_query_ms": {"target": 0.0001, "acceptable": 0.0002, "critical": 0.0003},
                "kafka_lag_messages": {"target": 0, "acceptable": 0, "critical": 0},  # any lag (Tansu under-reports)
                "feed_query_ms": {"target": 0.0001, "acceptable": 1e9},
            }
        ).decode(),
    )
    produce_events(pipeline.kafka, rate=0, duration_s=60, total=50)
    results = pipeline.checks(instance)
    slow = _failed(results, "events:events_query_latency")
    assert slow.severity == dg.AssetCheckSeverity.ERROR and slow.metadata["critical"].value == "0.0003"
    lag = _failed(results, "events:kafka_consumer_lag")
    assert lag.severity == dg.AssetCheckSeverity.ERROR
    feed = results["feed_recommendations:feed_query_latency"]
    assert feed.passed and feed.description.startswith("WARN")  # within acceptable: passes with a warning
    monkeypatch.setenv("NOVA_SLO_OVERRIDES", '{"nope": {"target": 1}}')
    with pytest.raises(Exception, match="NOVA_SLO_OVERRIDES"):
        slos()
