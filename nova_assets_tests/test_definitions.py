import dagster as dg
import pytest

from nova_assets import definitions
from nova_assets.errors import ConfigError


def test_definitions_load() -> None:
    dg.Definitions.validate_loadable(definitions.defs)


def test_one_resource_per_external_system() -> None:
    resources = definitions.defs.resources or {}
    assert set(resources) >= {"clickhouse", "kafka", "redis", "postgres"}


def test_redis_cluster_flag_is_read_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOVA_REDIS_CLUSTER", "yes")
    assert definitions.build_resources()["redis"].cluster is True  # type: ignore[attr-defined]
    monkeypatch.setenv("NOVA_REDIS_CLUSTER", "0")
    assert definitions.build_resources()["redis"].cluster is False  # type: ignore[attr-defined]
    monkeypatch.setenv("NOVA_REDIS_CLUSTER", "maybe")
    with pytest.raises(ConfigError, match="NOVA_REDIS_CLUSTER='maybe'"):
        definitions.build_resources()


def test_one_kafka_loader_at_a_time_under_the_project_instance(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """dagster.yaml's run queue keeps an ingestion run and a replay run from overlapping."""
    import shutil
    from pathlib import Path

    from dagster._utils.tags import TagConcurrencyLimitsCounter

    from nova_assets.defs.ingestion.jobs import kafka_ingestion_job, kafka_replay_job

    shutil.copy(Path(__file__).resolve().parents[1] / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        ingest = instance.create_run_for_job(kafka_ingestion_job, tags=kafka_ingestion_job.tags)
        replay = instance.create_run_for_job(kafka_replay_job, tags=kafka_replay_job.tags)
        another = instance.create_run_for_job(kafka_ingestion_job, tags=kafka_ingestion_job.tags)
    for running, queued in ((ingest, replay), (replay, another), (ingest, another)):
        assert TagConcurrencyLimitsCounter(limits, [running]).is_blocked(queued)
    assert not TagConcurrencyLimitsCounter(limits, []).is_blocked(replay)


def test_batch_runs_wait_for_each_other_and_the_checks_go_first(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A recompute and a taste-model fit never hold two of the four run slots; the SLO checks'
    runs are dequeued ahead of anything else waiting (the UI once showed them never run)."""
    import shutil
    from pathlib import Path

    from dagster._utils.tags import TagConcurrencyLimitsCounter

    from nova_assets.defs.cache.assets import feed_cache_schedule
    from nova_assets.defs.recommendations.assets import recommendations_schedule
    from nova_assets.defs.recommendations.tastes import tastes_schedule
    from nova_assets.defs.slo.definitions import slo_checks_schedule

    @dg.op
    def noop() -> None: ...

    @dg.job
    def placeholder() -> None:
        noop()

    shutil.copy(Path(__file__).resolve().parents[1] / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        recompute, fit, warm = (
            instance.create_run_for_job(placeholder, tags=s.tags)
            for s in (recommendations_schedule, tastes_schedule, feed_cache_schedule)
        )
    assert TagConcurrencyLimitsCounter(limits, [recompute]).is_blocked(fit)
    assert TagConcurrencyLimitsCounter(limits, [fit]).is_blocked(recompute)
    assert not TagConcurrencyLimitsCounter(limits, [recompute]).is_blocked(warm)  # its feeds expire if late
    assert int(slo_checks_schedule.tags["dagster/priority"]) > 0


def test_lineage_starts_at_the_sources() -> None:
    graph = definitions.defs.resolve_asset_graph()

    def parents(*path: str) -> set[str]:
        return {k.to_user_string() for k in graph.get(dg.AssetKey(list(path))).parent_keys}

    assert parents("events") == {"kafka/nova.events", "ddl/events"}
    for table in ("users", "posts", "likes", "comments", "follows"):
        # the data: one writer (the ingestion runs), from the topic, into the table its DDL asset made
        assert parents(table) == {f"kafka/nova.public.{table}", f"ddl/{table}"}
        assert not graph.get(dg.AssetKey(table)).is_materializable
        # schema_migrations: the table's forward migrations are recorded there
        assert parents("ddl", table) == {"schema_migrations"}
        assert parents("kafka", f"nova.public.{table}") == {f"postgres/{table}"}
    assert "user_author_90d" in parents("feed_recommendations")
    assert "feed_recommendations" in parents("feed_cache")
    for key in (dg.AssetKey(["kafka", "nova.events"]), dg.AssetKey(["postgres", "posts"])):
        node = graph.get(key)
        assert not node.is_materializable and node.group_name == "sources"


def test_the_code_location_has_one_definitions_object() -> None:
    """workspace.yaml loads nova_assets.definitions: a code location refuses a module with two."""
    found = [name for name, value in vars(definitions).items() if isinstance(value, dg.Definitions)]
    assert found == ["defs"]


def test_loading_the_definitions_leaves_the_heavy_libraries_unloaded() -> None:
    """Every run worker and code server imports the definitions (a run a minute for the SLO checks):
    pandas, scipy, pyarrow and psycopg load only in the steps that use them (~0.6 s of CPU each start)."""
    import subprocess
    import sys

    code = (
        "import sys, nova_assets.definitions; "
        "print(','.join(m for m in ('pandas', 'scipy', 'pyarrow', 'psycopg') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "", f"imported with the definitions: {loaded}"
