from __future__ import annotations

import datetime as dt
import shutil
import uuid
from pathlib import Path

import dagster as dg
import pytest

from nova_assets.core.schema import queries
from nova_assets.core.schema.ddl import apply_object, describe, expected_descriptions
from nova_assets.core.schema.sql_files import CLICKHOUSE_DIR, Renderer, load_objects
from nova_assets.defs.recommendations.assets import feed_recommendations
from nova_assets.defs.schema.assets import ddl_key, schema_assets
from nova_assets.defs.schema.checks import schema_drift_checks
from nova_assets.resources.clickhouse import ClickHouseResource
from nova_assets.topics import MIRROR_TABLES

EVENT_COLUMNS = ["event_id", "event_time", "user_id", "post_id", "author_id", "action", "dwell_ms", "device", "app_ver"]
UTC = dt.UTC


def _materialize(ch: ClickHouseResource) -> dg.ExecuteInProcessResult:
    return dg.materialize([*schema_assets, feed_recommendations, schema_drift_checks], resources={"clickhouse": ch})


def _metadata(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, object]]:
    return {
        ev.asset_key.path[-1]: {k: v.value for k, v in ev.step_materialization_data.materialization.metadata.items()}
        for ev in result.get_asset_materialization_events()
    }


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {ev.asset_key.path[-1]: ev for ev in result.get_asset_check_evaluations()}


@pytest.fixture
def ch(fresh_clickhouse: ClickHouseResource) -> ClickHouseResource:
    return fresh_clickhouse


@pytest.fixture
def schema(ch: ClickHouseResource) -> ClickHouseResource:
    assert _materialize(ch).success
    return ch


def test_materialize_twice_changes_nothing(ch: ClickHouseResource) -> None:
    first = _materialize(ch)
    assert first.success
    names = {obj.name for obj in load_objects()}
    meta = _metadata(first)
    assert set(meta) == names
    assert all(m["created"] for m in meta.values()), {n: m for n, m in meta.items() if not m["created"]}
    assert meta["events"]["dagster/row_count"] == 0
    assert f"CREATE TABLE IF NOT EXISTS `{ch.database}`.events" in str(meta["events"]["ddl"])
    checks = _checks(first)
    assert set(checks) == names and all(c.passed for c in checks.values()), {
        n: c.metadata for n, c in checks.items() if not c.passed
    }

    with ch.session() as client:
        before = {o.name: describe(client, ch.database, o.name) for o in load_objects()}
    second = _materialize(ch)
    assert second.success
    assert not any(m["created"] for m in _metadata(second).values())
    with ch.session() as client:
        after = {o.name: describe(client, ch.database, o.name) for o in load_objects()}
        leftovers = client.query(
            "SELECT name FROM system.databases WHERE name LIKE {scratch:String}",
            parameters={"scratch": f"{ch.database}__expected%"},
        ).result_rows
    assert before == after
    assert leftovers == []
    assert all(c.passed for c in _checks(second).values())


def _event(user: uuid.UUID, author: uuid.UUID, post: uuid.UUID, when: dt.datetime, action: str, dwell: int) -> list:
    return [uuid.uuid4(), when, user, post, author, action, dwell, "ios", "1.0"]


def test_aggregates_exact_and_90_day_window(schema: ClickHouseResource) -> None:
    user, author, post, post2 = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    now = dt.datetime.now(UTC).replace(minute=10, second=0, microsecond=0)
    hour = now.replace(minute=0)
    rows = [
        _event(user, author, post, now, "view", 1000),
        _event(user, author, post, now, "view", 500),
        _event(user, author, post, now, "click", 0),
        _event(user, author, post, now, "like", 0),
        _event(user, author, post2, now - dt.timedelta(hours=2), "comment", 0),
        _event(user, author, post2, now - dt.timedelta(hours=2), "share", 0),
        _event(user, author, post, now - dt.timedelta(days=95), "like", 0),  # outside 90 days
    ]
    # separate inserts create separate parts: the sums must hold before and after merging
    for row in rows:
        schema.insert("events", [row], EVENT_COLUMNS)

    def metrics() -> list[tuple]:
        return schema.query(
            "SELECT post_id, window_start, sum(views), sum(clicks), sum(likes), sum(comments), sum(shares), "
            "sum(dwell_ms) FROM post_metrics_1h WHERE window_start >= {since:DateTime} "
            "GROUP BY post_id, window_start ORDER BY window_start",
            parameters={"since": (hour - dt.timedelta(hours=3)).replace(tzinfo=None)},
        ).result_rows

    def affinity() -> list[tuple]:
        return schema.query(
            "SELECT total_views, total_clicks, total_likes, total_comments, total_shares, total_dwell_ms "
            "FROM user_author_90d WHERE user_id = {u:UUID} AND author_id = {a:UUID}",
            parameters={"u": user, "a": author},
        ).result_rows

    two_hours_ago = hour - dt.timedelta(hours=2)
    expected_metrics = [
        (post2, two_hours_ago.replace(tzinfo=None), 0, 0, 0, 1, 1, 0),
        (post, hour.replace(tzinfo=None), 2, 1, 1, 0, 0, 1500),
    ]
    got = [(r[0], r[1].replace(tzinfo=None), *r[2:]) for r in metrics()]
    assert got == expected_metrics
    assert affinity() == [(2, 1, 1, 1, 1, 1500)]
    for table in ("post_metrics_1h", "user_author_daily"):
        schema.command(f"OPTIMIZE TABLE {table} FINAL")
    got = [(r[0], r[1].replace(tzinfo=None), *r[2:]) for r in metrics()]
    assert got == expected_metrics
    assert affinity() == [(2, 1, 1, 1, 1, 1500)]
    # the 95-day-old like is in the daily table (until TTL) but not in the 90-day view
    old_days = schema.query(
        "SELECT count() FROM user_author_daily WHERE user_id = {u:UUID} AND day < today() - 90", parameters={"u": user}
    ).result_rows
    assert old_days in ([(1,)], [(0,)])  # TTL may already have removed it after OPTIMIZE FINAL
    timeline = queries.user_timeline(schema, user, now - dt.timedelta(days=1))
    assert len(timeline) == 6 and timeline[0][1] in ("view", "click", "like")
    assert queries.user_timeline(schema, "00000000-0000-0000-0000-000000000000", now - dt.timedelta(days=1)) == []
    engagement = queries.post_engagement(schema, [post, post2], hours=24)
    assert engagement[post]["views"] == 2 and engagement[post2]["shares"] == 1
    assert queries.user_affinity(schema, user)[0][0] == author


def test_retried_batch_is_harmless_in_table_and_views(schema: ClickHouseResource) -> None:
    user, author, post = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    batch = [_event(user, author, post, dt.datetime.now(UTC), "like", 10) for _ in range(5)]
    settings = {
        "insert_deduplication_token": "nova.events/0/100-104",
        "deduplicate_blocks_in_dependent_materialized_views": 1,
    }
    for _ in range(3):
        schema.insert("events", batch, EVENT_COLUMNS, settings=settings)
    assert schema.query("SELECT count() FROM events").result_rows == [(5,)]
    assert schema.query("SELECT sum(likes) FROM post_metrics_1h").result_rows == [(5,)]
    assert schema.query("SELECT sum(likes) FROM user_author_daily").result_rows == [(5,)]


def test_mirror_latest_version_and_deletes(schema: ClickHouseResource) -> None:
    pid, author = uuid.uuid4(), uuid.uuid4()
    ts = dt.datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    cols = ["id", "author_id", "body", "created_at", "updated_at", "version", "is_deleted"]
    schema.insert("posts", [[pid, author, "v1", ts, ts, 100, 0]], cols)
    schema.insert("posts", [[pid, author, "v3", ts, ts, 300, 0]], cols)
    schema.insert("posts", [[pid, author, "v2", ts, ts, 200, 0]], cols)  # late arrival of an older change
    assert schema.query("SELECT body FROM posts FINAL WHERE id = {i:UUID}", parameters={"i": pid}).result_rows == [
        ("v3",)
    ]
    schema.insert("posts", [[pid, author, "v3", ts, ts, 400, 1]], cols)
    assert schema.query("SELECT count() FROM posts FINAL WHERE id = {i:UUID}", parameters={"i": pid}).result_rows == [
        (0,)
    ]
    schema.command("OPTIMIZE TABLE posts FINAL")
    assert schema.query("SELECT count() FROM posts FINAL").result_rows == [(0,)]


def test_drift_is_an_error_with_a_diff(schema: ClickHouseResource) -> None:
    schema.command("ALTER TABLE events ADD COLUMN sneaky String")
    schema.command("ALTER TABLE dead_letters MODIFY TTL toDateTime(received_at) + INTERVAL 1 DAY")
    result = dg.materialize(
        [*schema_assets, feed_recommendations, schema_drift_checks],
        resources={"clickhouse": schema},
        selection=dg.AssetSelection.checks_for_assets(*(ddl_key(n) for n in ("events", "dead_letters", "users"))),
    )
    checks = _checks(result)
    events = checks["events"]
    assert not events.passed
    assert events.severity == dg.AssetCheckSeverity.ERROR
    assert "+ column sneaky String" in events.metadata["diff"].value
    dead = checks["dead_letters"]
    assert not dead.passed and "+ ttl: toDateTime(received_at) + toIntervalDay(1)" in dead.metadata["diff"].value
    assert checks["users"].passed
    # nothing was dropped or repaired
    assert "sneaky" in [c[0] for c in schema.query("DESCRIBE TABLE events").result_rows]


def test_missing_object_is_reported(ch: ClickHouseResource) -> None:
    result = dg.materialize(
        [*schema_assets, feed_recommendations, schema_drift_checks],
        resources={"clickhouse": ch},
        selection=dg.AssetSelection.checks_for_assets("post_metrics_1h_mv"),
    )
    check = _checks(result)["post_metrics_1h_mv"]
    assert not check.passed and "missing" in check.metadata["diff"].value


def test_forward_migration_applied_once(ch: ClickHouseResource, tmp_path: Path) -> None:
    sql_dir = tmp_path / "clickhouse"
    shutil.copytree(CLICKHOUSE_DIR, sql_dir)
    (sql_dir / "migrations" / "0010_events__add_country.sql").write_text(
        "-- object: events\nALTER TABLE {{ db }}.{{ table('events') }} {{ on_cluster }} "
        "ADD COLUMN IF NOT EXISTS country LowCardinality(String) DEFAULT '';\n"
    )
    objects = load_objects(sql_dir)
    renderer = Renderer(ch.database)
    with ch.session() as client:
        for obj in objects:
            apply_object(client, obj, renderer)
        events = next(o for o in objects if o.name == "events")
        again = apply_object(client, events, renderer)
        assert again.migrations == [] and not again.created
        ledger = client.query("SELECT name, object FROM schema_migrations ORDER BY name").result_rows
        assert ledger == [
            ("0001_events__kafka_incarnation", "events"),
            ("0002_dead_letters__kafka_incarnation", "dead_letters"),
            *[(f"000{n}_{t}__snapshot", t) for n, t in enumerate(MIRROR_TABLES, start=3)],
            ("0009_post_deletions_mv__backfill", "post_deletions_mv"),
            ("0010_events__add_country", "events"),
        ]
        expected = expected_descriptions(client, ch.database, [events], objects)
        assert expected["events"] == describe(client, ch.database, "events")
        assert "country LowCardinality(String) DEFAULT ''" in expected["events"]["columns"]


def test_cluster_rendering() -> None:
    renderer = Renderer("nova", "prod")
    by_name = {o.name: renderer.render(o.template) for o in load_objects()}
    events = by_name["events"]
    assert events[0].startswith("CREATE TABLE IF NOT EXISTS `nova`.events_local ON CLUSTER `prod`")
    assert "ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')" in events[0]
    assert "replicated_deduplication_window = 10000" in events[0]
    assert "ENGINE = Distributed('prod', 'nova', 'events_local', cityHash64(user_id))" in events[1]
    assert "ON CLUSTER `prod` AS `nova`.events_local" in events[1]
    assert (
        "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', "
        "version, is_deleted)" in by_name["posts"][0]
    )
    assert "ReplicatedSummingMergeTree(" in by_name["post_metrics_1h"][0]
    mv = by_name["post_metrics_1h_mv"][0]
    assert "ON CLUSTER `prod`" in mv and "TO `nova`.post_metrics_1h_local" in mv and "FROM `nova`.events_local" in mv
    assert len(by_name["post_metrics_1h_mv"]) == 1  # a view gets no Distributed twin
    migration = next(o for o in load_objects() if o.name == "events").migrations[0]
    assert [m.split("ADD")[0].strip() for m in renderer.render(migration.template)] == [
        "ALTER TABLE `nova`.events_local ON CLUSTER `prod`",
        "ALTER TABLE `nova`.events ON CLUSTER `prod`",
    ]
    single = Renderer("nova")
    plain = single.render(load_objects()[1].template)
    assert len(plain) == 1 and "ON CLUSTER" not in plain[0] and "Replicated" not in plain[0]
    assert "non_replicated_deduplication_window = 10000" in plain[0]
