"""docker/: the production compose files and what they mount, checked without a Docker engine.

`docker-compose config` (Debian's docker-compose, installed by .ci/run) validates and resolves
both compose files; the ClickHouse XML, Debezium JSON, Prometheus and Grafana files are parsed
and held to what the project expects; the dashboards' metric names are checked against a real
`/metrics` scrape; the image's command is run here and must serve the definitions.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from nova_assets.core.cdc.runner import connector_properties
from nova_assets.core.ingestion.messages import CDC_TOPIC_PREFIX, EVENTS_TOPIC
from nova_assets.core.process import free_port
from nova_assets.core.recommendations.scoring import ScoringParams, recompute
from nova_assets.resources import RedisResource
from nova_assets.serving import FeedService
from nova_assets.serving.http import serve_in_thread
from nova_assets_tests.world import World

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE_FILES = [DOCKER / "compose.yaml", DOCKER / "cluster" / "compose.yaml"]
CDC_TABLES = ["users", "posts", "likes", "comments", "follows", "debezium_heartbeat"]
PLATFORM = {
    "preflight", "clickhouse", "kafka", "kafka-init", "redis", "postgres", "postgres-init", "connect", "connect-init",
    "dagster-postgres", "docker-proxy", "nova-code", "dagster-webserver", "dagster-daemon", "nova-serve",
    "prometheus", "alertmanager", "grafana",
}  # fmt: skip
COMPOSE = shutil.which("docker-compose")
needs_compose = pytest.mark.skipif(COMPOSE is None, reason="docker-compose not installed (.ci/run installs it)")


def _resolved(compose: Path, tmp_path: Path, extra: str = "") -> dict:
    env_file = tmp_path / "env"
    env_file.write_text((DOCKER / ".env.example").read_text() + "CLICKHOUSE_INTERSERVER_SECRET=s3cret\n" + extra)
    out = subprocess.run(
        [COMPOSE, "--env-file", str(env_file), "-f", str(compose), "config"],  # type: ignore[list-item]
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return yaml.safe_load(out.stdout)


@needs_compose
@pytest.mark.parametrize("compose", COMPOSE_FILES, ids=["platform", "cluster"])
def test_compose_files_validate_publish_on_loopback_and_need_their_secrets(compose: Path, tmp_path: Path) -> None:
    config = _resolved(compose, tmp_path)
    services = config["services"]
    ports = [p for s in services.values() for p in s.get("ports", [])]
    assert ports and all(str(p).startswith("127.0.0.1:") for p in ports), ports
    if compose.parent == DOCKER:
        assert set(services) == PLATFORM
    else:
        assert {f"ch-s{s}-r{r}" for s in (1, 2) for r in (1, 2)} <= set(services)
        assert {"keeper1", "keeper2", "keeper3", "kafka1", "kafka2", "kafka3", "redis-cluster-init"} <= set(services)
        assert sum(1 for name in services if re.fullmatch(r"redis\d", name)) == 6
        env = services["nova-code"]["environment"]
        assert env["NOVA_CLICKHOUSE_CLUSTER"] == "nova" and env["NOVA_REDIS_CLUSTER"] == "true"
        assert int(env["NOVA_INGEST_SHARDS"]) > 1
        assert services["kafka-init"]["environment"]["REPLICATION_FACTOR"] in (3, "3")
    # no secret in git: every password in the compose file is a required variable
    text = compose.read_text()
    for secret in ("CLICKHOUSE_PIPELINE_PASSWORD", "POSTGRES_PASSWORD", "DAGSTER_POSTGRES_PASSWORD"):
        assert f"${{{secret}:?" in text
    assert "change-me" not in text
    empty = tmp_path / "empty.env"
    empty.write_text("")
    missing = subprocess.run(
        [COMPOSE, "--env-file", str(empty), "-f", str(compose), "config"],  # type: ignore[list-item]
        capture_output=True, text=True, env={"PATH": os.environ["PATH"]},
    )  # fmt: skip
    assert missing.returncode != 0 and "PASSWORD" in missing.stderr


@needs_compose
def test_dagster_services_share_the_image_storage_and_run_launcher(tmp_path: Path) -> None:
    services = _resolved(DOCKER / "compose.yaml", tmp_path)["services"]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for name in ("nova-code", "dagster-webserver", "dagster-daemon", "nova-serve"):
        assert services[name]["image"] == f"nova-assets:{version}"
        assert services[name]["build"]["dockerfile"].endswith("docker/Dockerfile")
    assert services["dagster-daemon"]["command"][:2] == ["dagster-daemon", "run"]
    assert services["dagster-daemon"]["environment"]["DOCKER_HOST"] == "tcp://docker-proxy:2375"
    assert services["nova-serve"]["environment"]["NOVA_CLICKHOUSE_URL"].startswith("http://nova_feed:")
    instance = yaml.safe_load((DOCKER / "dagster" / "dagster.yaml").read_text())
    assert set(instance["storage"]["postgres"]["postgres_db"]) >= {"hostname", "username", "password", "db_name"}
    assert instance["storage"]["postgres"]["postgres_db"]["password"] == {"env": "DAGSTER_POSTGRES_PASSWORD"}
    assert instance["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert instance["run_launcher"] == {
        **instance["run_launcher"],
        "module": "dagster_docker",
        "class": "DockerRunLauncher",
    }
    limits = instance["concurrency"]["runs"]["tag_concurrency_limits"]
    local = yaml.safe_load((ROOT / "dagster.yaml").read_text())["concurrency"]["runs"]["tag_concurrency_limits"]
    assert limits == local  # the same loader limits as the project's own instance
    workspace = yaml.safe_load((DOCKER / "dagster" / "workspace.yaml").read_text())
    assert workspace["load_from"][0]["grpc_server"]["host"] == "nova-code"


def test_clickhouse_configuration_holds_the_settings_and_least_privilege_users() -> None:
    config = ET.parse(DOCKER / "clickhouse" / "config.d" / "nova.xml").getroot()
    assert int(config.findtext("max_concurrent_queries")) > 0  # type: ignore[arg-type]
    assert 0 < float(config.findtext("max_server_memory_usage_to_ram_ratio")) < 1  # type: ignore[arg-type]
    assert int(config.findtext("query_cache/max_size_in_bytes")) > 0  # type: ignore[arg-type]
    users = ET.parse(DOCKER / "clickhouse" / "users.d" / "nova.xml").getroot()
    pipeline, feed = users.find("users/nova"), users.find("users/nova_feed")
    assert pipeline is not None and feed is not None
    for user in (pipeline, feed):
        password = user.find("password")
        assert password is not None and password.get("from_env") and not (password.text or "").strip()
    assert users.find("users/default").get("remove") == "remove"  # type: ignore[union-attr]
    feed_grants = [q.text or "" for q in feed.findall("grants/query")]
    assert feed_grants and all(g.startswith(("GRANT SELECT ON nova.", "GRANT REMOTE ON")) for g in feed_grants)
    profile = users.find(f"profiles/{feed.findtext('profile')}")
    assert profile is not None and profile.findtext("readonly") in ("1", "2")
    assert profile.findtext("use_query_cache") == "1"
    assert any("ON nova.*" in (q.text or "") for q in pipeline.findall("grants/query"))
    assert not any("GRANT ALL" in (q.text or "") for q in pipeline.findall("grants/query"))  # DDL is nova_ddl's
    cluster = ET.parse(DOCKER / "cluster" / "clickhouse" / "cluster.xml").getroot()
    shards = cluster.findall("remote_servers/nova/shard")
    assert [len(s.findall("replica")) for s in shards] == [2, 2]
    assert all(s.findtext("internal_replication") == "true" for s in shards)
    assert len(cluster.findall("zookeeper/node")) == 3
    for path in (DOCKER / "cluster" / "keeper").glob("*.xml"):
        assert len(ET.parse(path).getroot().findall("keeper_server/raft_configuration/server")) == 3


def test_debezium_connector_produces_the_topics_ingestion_reads(tmp_path: Path) -> None:
    connector = json.loads((DOCKER / "debezium" / "nova-postgres-connector.json").read_text())
    config = connector["config"]
    for key in ("connector.class", "database.hostname", "database.user", "database.password", "slot.name",
                "plugin.name", "table.include.list", "topic.prefix", "transforms.unwrap.type"):  # fmt: skip
        assert config.get(key), key
    assert config["database.password"].startswith("${env:")  # from Connect's environment
    tables = [t.split(".", 1)[1] for t in config["table.include.list"].split(",")]
    assert sorted(tables) == sorted(CDC_TABLES)
    topics = {f"{config['topic.prefix']}.public.{t}" for t in tables}
    assert all(t.startswith(CDC_TOPIC_PREFIX) for t in topics)
    script = (DOCKER / "kafka" / "create-topics.sh").read_text()
    assert f"create {EVENTS_TOPIC} " in script and "nova.public.$table" in script
    assert all(t in script for t in CDC_TABLES)
    postgres_sql = {p.stem.split("_", 1)[1] for p in (ROOT / "sql" / "postgres").glob("*.sql")}
    assert set(CDC_TABLES) == postgres_sql
    # the same connector `nova cdc` runs embedded: the records the loader decodes are the same
    embedded = connector_properties("postgresql://nova@127.0.0.1:5432/nova", tmp_path)
    # publication.autocreate.mode differs on purpose: in production postgres-init creates the
    # publication as the tables' owner (disabled), embedded the engine makes it (filtered)
    assert config["publication.autocreate.mode"] == "disabled"
    shared = (
        "plugin.name", "publication.name", "slot.name", "topic.prefix",
        "table.include.list", "transforms", "transforms.unwrap.type", "transforms.unwrap.add.fields",
        "transforms.unwrap.delete.tombstone.handling.mode", "tombstones.on.delete", "heartbeat.action.query",
    )  # fmt: skip
    for key in shared:
        assert config[key] == embedded[key], key


def _scrape(world: World, redis_resource: RedisResource) -> set[str]:
    """Metric names of a real `nova serve` after a miss (ClickHouse) and a hit of one user's feed."""
    with world.ch.session() as client:
        recompute(client, ScoringParams(feed_size=10))
    service = FeedService(world.ch, redis_resource.client())
    port = free_port()
    server, _thread = serve_in_thread(service, port)
    try:
        for _ in range(2):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/feed/{world.users[2]}").read()
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    finally:
        server.shutdown()
        service.close()
    return {line.split("{", 1)[0].split(" ", 1)[0] for line in body.splitlines() if line and not line.startswith("#")}


def test_dashboards_and_alerts_query_metrics_nova_serve_exports(world: World, redis_resource: RedisResource) -> None:
    exported = _scrape(world, redis_resource)
    prometheus = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    assert prometheus["scrape_configs"][0]["static_configs"][0]["targets"] == ["nova-serve:8080"]
    rules = yaml.safe_load((DOCKER / "prometheus" / "alerts.yml").read_text())["groups"][0]["rules"]
    grafana_rules = yaml.safe_load((DOCKER / "grafana" / "provisioning" / "alerting" / "nova-alerts.yaml").read_text())
    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "nova-feed.json").read_text())
    yaml.safe_load((DOCKER / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    exprs = [r["expr"] for r in rules]
    exprs += [
        d["model"]["expr"] for r in grafana_rules["groups"][0]["rules"] for d in r["data"] if "expr" in d["model"]
    ]
    exprs += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) == 9
    for expr in exprs:
        names = set(re.findall(r"\b([a-z_]+_(?:bucket|total))\b", expr))
        assert names and names <= exported, (expr, names - exported)
        if "histogram_quantile" in expr:
            assert "sum by (le)" in expr  # the guide's query without it gives one quantile per series
    thresholds = {r["alert"]: float(r["expr"].rsplit(" ", 1)[1]) for r in rules}
    assert thresholds == {"FeedLatencyP95High": 500.0, "FeedCacheHitRateLow": 80.0, "FeedRankingQueryP95High": 800.0}
    assert all(r["for"] == "5m" for r in rules)


@pytest.mark.integration  # starts the image's code server
def test_the_image_command_serves_the_definitions(tmp_path: Path) -> None:
    cmd_line = next(line for line in (DOCKER / "Dockerfile").read_text().splitlines() if line.startswith("CMD "))
    cmd = json.loads(cmd_line[4:])
    assert cmd[:3] == ["dagster", "code-server", "start"] and "nova_assets.definitions" in cmd and "defs" in cmd
    port = free_port()
    args = [a.replace("0.0.0.0", "127.0.0.1") for a in cmd]
    args[args.index("-p") + 1] = str(port)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "DAGSTER_HOME": str(tmp_path)}
    server = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        from dagster._grpc.client import DagsterGrpcClient

        client = DagsterGrpcClient(port=port, host="127.0.0.1")
        deadline = time.monotonic() + 120
        names: list[str] = []
        while time.monotonic() < deadline and server.poll() is None:
            try:
                result = json.loads(client.list_repositories())  # the serialized ListRepositoriesResponse
                names = [s["repository_name"] for s in result["repository_symbols"]]
                pointer = result["repository_code_pointer_dict"]["__repository__"]
                assert (pointer["module"], pointer["fn_name"]) == ("nova_assets.definitions", "defs")
                break
            except AssertionError:
                raise
            except Exception:
                time.sleep(1)
        assert names == ["__repository__"], (names, server.poll())
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:  # its gRPC child is slow to stop on a busy machine; what it served is checked
            server.kill()
            server.wait(10)


@pytest.mark.integration  # loads the definitions in a process of its own
def test_production_variables_reach_every_resource_without_a_local_stack(tmp_path: Path) -> None:
    """The env of the compose file's Dagster services: every resource points at the servers, and
    nothing looks at a local stack (NOVA_HOME stays empty)."""
    env = {
        **os.environ,
        "NOVA_HOME": str(tmp_path / "home"),
        "NOVA_CLICKHOUSE_URL": "http://nova:pw@clickhouse:8123",
        "NOVA_KAFKA_BOOTSTRAP": "kafka:29092",
        "NOVA_REDIS_URL": "redis://redis:6379/0",
        "NOVA_POSTGRES_DSN": "postgresql://nova:pw@postgres:5432/nova",
    }
    script = (
        "import dagster as dg, json\n"
        "from nova_assets.definitions import defs\n"
        "from nova_assets.resources.clickhouse import chdb_path\n"
        "with dg.build_resources(defs.resources) as r:\n"
        "    print(json.dumps({'clickhouse': r.clickhouse.url, 'embedded': chdb_path(r.clickhouse.url) is not None,\n"
        "        'kafka': r.kafka.bootstrap_servers, 'redis': r.redis.url, 'postgres': r.postgres.dsn}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    resolved = json.loads(out.stdout.strip().splitlines()[-1])
    assert resolved == {
        "clickhouse": "http://nova:pw@clickhouse:8123",
        "embedded": False,
        "kafka": "kafka:29092",
        "redis": "redis://redis:6379/0",
        "postgres": "postgresql://nova:pw@postgres:5432/nova",
    }
    assert not (tmp_path / "home").exists()
