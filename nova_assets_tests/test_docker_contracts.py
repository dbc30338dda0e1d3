"""Contracts between the code and docker/: would the production deployment start, and is it safe?

Each test is one finding of a careful read of docker/ against the sources of dagster-docker,
Kafka Connect, Kafka, ClickHouse, Redis and Postgres, written so that it fails on the files that
had the finding. No Docker engine is needed: compose files are resolved by Debian's
docker-compose (installed by .ci/run) where available and parsed as YAML otherwise.
"""

from __future__ import annotations

import base64
import inspect
import json
import os
import re
import shutil
import subprocess
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from nova_assets import settings
from nova_assets.core.cache import deletions, owners, warming
from nova_assets.core.recommendations import scoring

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE_FILES = {"platform": DOCKER / "compose.yaml", "cluster": DOCKER / "cluster" / "compose.yaml"}
DAGSTER_SERVICES = ("nova-code", "dagster-webserver", "dagster-daemon")
COMPOSE = shutil.which("docker-compose")
SECRET = re.compile(r"\$\{([A-Z0-9_]*(?:PASSWORD|SECRET)[A-Z0-9_]*)(:?[-?]?)")


def _env_example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (DOCKER / ".env.example").read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs if not k.startswith("#")}


def _strong_env() -> dict[str, str]:
    """.env.example with every secret replaced by a real-looking one."""
    env = _env_example()
    return {k: (f"{k.lower()}-0123456789abcdef" if SECRET.search("${" + k) else v) for k, v in env.items()}


@pytest.fixture(scope="module", params=sorted(COMPOSE_FILES))
def compose(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    """(name, resolved compose file): docker-compose's own resolution when it is installed."""
    name = request.param
    path = COMPOSE_FILES[name]
    if COMPOSE is None:
        return name, yaml.safe_load(path.read_text())
    env_file = tmp_path_factory.mktemp("env") / "env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in _strong_env().items()))
    out = subprocess.run(
        [COMPOSE, "--env-file", str(env_file), "-f", str(path), "config"], capture_output=True, text=True, check=True
    )
    return name, yaml.safe_load(out.stdout)


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _instance() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "dagster" / "dagster.yaml").read_text())


def test_every_deployment_setting_reaches_every_process_that_runs_code(compose: tuple[str, dict]) -> None:
    name, config = compose
    services = config["services"]
    for service in DAGSTER_SERVICES:
        missing = set(settings.DEPLOYMENT_SETTINGS) - set(_env(services[service]))
        assert not missing, f"{name}/{service} lacks {sorted(missing)}"
    launched = set(_instance()["run_launcher"]["config"]["env_vars"])
    assert set(settings.DEPLOYMENT_SETTINGS) <= launched, set(settings.DEPLOYMENT_SETTINGS) - launched
    serve = _env(services["nova-serve"])
    assert set(settings.SERVING_SETTINGS) <= set(serve), set(settings.SERVING_SETTINGS) - set(serve)
    cluster = "nova" if name == "cluster" else ""
    for service in (*DAGSTER_SERVICES, "nova-serve"):
        env = _env(services[service])
        assert env[settings.CLICKHOUSE_CLUSTER] == cluster, service
        assert env[settings.REDIS_CLUSTER] == ("true" if cluster else "false"), service
    # the app's Postgres is Debezium's source, not the pipeline's: its DSN reaches no Dagster process
    assert all(settings.POSTGRES_DSN not in _env(services[s]) for s in DAGSTER_SERVICES)


def test_dagster_storage_uses_the_driver_dagster_postgres_works_with() -> None:
    """SQLAlchemy 2.1 makes psycopg 3 the default for postgresql://; dagster-postgres' NOTIFY with a
    bound parameter fails there (seen running docker/dagster/dagster.yaml against Postgres 18)."""
    lock = (ROOT / "requirements.lock").read_text()
    sqlalchemy = re.search(r"^SQLAlchemy==(\d+)\.(\d+)", lock, re.MULTILINE | re.IGNORECASE)
    assert sqlalchemy is not None
    if (int(sqlalchemy.group(1)), int(sqlalchemy.group(2))) >= (2, 1):
        assert _instance()["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"


def test_the_run_launcher_has_an_image_and_it_is_the_code_servers(compose: tuple[str, dict]) -> None:
    _, config = compose
    services = config["services"]
    launcher = _instance()["run_launcher"]
    assert launcher["class"] == "DockerRunLauncher"
    image = launcher["config"].get("image")
    assert image == {"env": "DAGSTER_CURRENT_IMAGE"}, "dagster-docker: 'No docker image specified' without it"
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for service in ("nova-code", "dagster-daemon"):
        assert (
            _env(services[service])["DAGSTER_CURRENT_IMAGE"]
            == services["nova-code"]["image"]
            == f"nova-assets:{version}"
        )


def test_dagster_and_its_runs_yield_the_cpu_to_the_read_path(compose: tuple[str, dict]) -> None:
    """As NOVA_DAGSTER_NICE does locally: Dagster's services and every run container get half the
    CPU weight of the read path and the servers when they share a host."""
    _, config = compose
    services = config["services"]
    for name in ("nova-code", "dagster-webserver", "dagster-daemon"):
        assert int(services[name]["cpu_shares"]) == 512, name
    assert "cpu_shares" not in services["nova-serve"]
    assert _instance()["run_launcher"]["config"]["container_kwargs"]["cpu_shares"] == 512


#: images whose releases are numbered major.minor (18.1 is a full version); all others major.minor.patch
TWO_PART_VERSIONS = {"postgres"}


def test_no_image_tag_floats(compose: tuple[str, dict]) -> None:
    _, config = compose
    images = [s["image"] for s in config["services"].values() if "image" in s]
    images += [line.split()[1] for line in (DOCKER / "Dockerfile").read_text().splitlines() if line.startswith("FROM ")]
    for image in images:
        if "@sha256:" in image:
            continue
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else "latest"
        numbers = re.match(r"v?(\d+(?:\.\d+)*)", tag)
        parts = 2 if image.split(":")[0] in TWO_PART_VERSIONS else 3
        assert numbers and numbers.group(1).count(".") >= parts - 1, f"{image}: pin a full version, not {tag!r}"


def test_no_secret_has_a_default_and_placeholders_do_not_start() -> None:
    for path in COMPOSE_FILES.values():
        for name, op in SECRET.findall(path.read_text()):
            assert op == ":?", f"{path.name}: ${{{name}}} must be required (:?), not defaulted or optional"
    preflight = DOCKER / "preflight.sh"
    placeholders = subprocess.run(["sh", str(preflight)], env={**_env_example(), "PATH": os.environ["PATH"]},
                                  capture_output=True, text=True)  # fmt: skip
    assert placeholders.returncode != 0
    assert "CLICKHOUSE_PIPELINE_PASSWORD is still a placeholder" in placeholders.stdout
    assert "change-me" not in placeholders.stdout  # names, never values
    short_env = {"REDIS_PASSWORD": "short", "PATH": os.environ["PATH"]}
    short = subprocess.run(["sh", str(preflight), "REDIS_PASSWORD"], env=short_env, capture_output=True, text=True)
    assert short.returncode != 0 and "shorter than 16" in short.stdout
    good = subprocess.run(["sh", str(preflight)], env={**_strong_env(), "PATH": os.environ["PATH"]},
                          capture_output=True, text=True)  # fmt: skip
    assert good.returncode == 0, good.stdout


def test_long_running_services_wait_for_preflight_and_are_bounded(compose: tuple[str, dict]) -> None:
    name, config = compose
    for service, spec in config["services"].items():
        one_shot = spec.get("restart") == "no"
        assert spec.get("logging", {}).get("options", {}).get("max-size"), f"{name}/{service}: no log rotation"
        if one_shot or service in ("preflight", "docker-proxy"):
            continue
        assert spec.get("restart") == "unless-stopped", f"{name}/{service}"
        assert "healthcheck" in spec, f"{name}/{service}: no healthcheck"
        assert spec.get("mem_limit"), f"{name}/{service}: no memory limit"
        assert "preflight" in spec.get("depends_on", {}), f"{name}/{service} starts without the preflight"


def test_connect_worker_has_the_config_providers_the_connector_uses(compose: tuple[str, dict]) -> None:
    _, config = compose
    connector = json.loads((DOCKER / "debezium" / "nova-postgres-connector.json").read_text())["config"]
    used = set(re.findall(r"\$\{(\w+):", json.dumps(connector)))
    assert used == {"env"}
    assert not any(k.startswith("config.providers") for k in connector), "Connect ignores providers in a connector"
    worker = _env(config["services"]["connect"])
    assert "env" in worker["CONNECT_CONFIG_PROVIDERS"].split(",")
    assert worker["CONNECT_CONFIG_PROVIDERS_ENV_CLASS"].endswith("EnvVarConfigProvider")
    # worker properties are CONNECT_* variables (the Debezium image ignores the rest)
    for key in worker:
        if key.endswith("_REPLICATION_FACTOR"):
            assert key.startswith("CONNECT_"), key
    kafka_init = _env(config["services"]["kafka-init"])
    rf = int(kafka_init.get("REPLICATION_FACTOR", "1"))
    if rf > 1:
        for store in ("CONFIG", "OFFSET", "STATUS"):
            assert int(worker[f"CONNECT_{store}_STORAGE_REPLICATION_FACTOR"]) == rf


def test_kraft_cluster_id_is_16_bytes_and_not_a_shared_default(compose: tuple[str, dict]) -> None:
    name, config = compose
    cluster_id = _env_example()["KAFKA_CLUSTER_ID"]
    assert len(base64.urlsafe_b64decode(cluster_id + "=" * (-len(cluster_id) % 4))) == 16
    assert "KAFKA_CLUSTER_ID:-" not in COMPOSE_FILES[name].read_text()
    brokers = [s for n, s in config["services"].items() if re.fullmatch(r"kafka\d?", n)]
    assert brokers
    for broker in brokers:
        env = _env(broker)
        assert env["CLUSTER_ID"] == cluster_id
        protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
        assert set(protocols.values()) == {"SASL_PLAINTEXT"}, protocols  # no unauthenticated listener
        assert env["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("StandardAuthorizer")
        assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    kafka_config = json.loads(_env(config["services"]["dagster-daemon"])[settings.KAFKA_CONFIG])
    assert kafka_config["security.protocol"] == "SASL_PLAINTEXT" and kafka_config["sasl.username"] == "nova"
    script = (DOCKER / "kafka" / "create-topics.sh").read_text()
    assert "--allow-principal User:nova" in script and "--allow-principal User:connect" in script


def _tables(sql: str) -> set[str]:
    sql = re.sub(r"--[^\n]*", "", sql)
    return {t for t in re.findall(r"\b(?:FROM|JOIN)\s+([a-z_][a-z0-9_]*)\b", sql, re.IGNORECASE)} - {"wanted"}


def _grants(user: str) -> list[str]:
    users = ET.parse(DOCKER / "clickhouse" / "users.d" / "nova.xml").getroot()
    node = users.find(f"users/{user}")
    assert node is not None, user
    return [q.text or "" for q in node.findall("grants/query")]


def _covers(grants: list[str], privilege: str, table: str) -> bool:
    for grant in grants:
        match = re.match(r"GRANT (.+) ON (\S+)$", grant)
        if not match:
            continue
        privileges = {p.strip() for p in match.group(1).split(",")}
        target = match.group(2)
        if (privilege in privileges or "ALL" in privileges) and (
            target in (f"nova.{table}", "nova.*", "*.*")
            or (target.endswith("*") and f"nova.{table}".startswith(target[:-1]))
        ):
            return True
    return False


def test_clickhouse_users_have_exactly_the_grants_their_queries_need() -> None:
    # the read path: what `nova serve` runs as nova_feed (feed_posts.sql, the version lookup, the
    # deletes it polls and the version's feed owners), and nothing more
    read_path = (
        _tables(warming.FEEDS_FOR)
        | _tables(inspect.getsource(scoring.latest_version))
        | _tables(deletions.RECENT)
        | _tables(owners.OWNERS)
    )
    assert read_path == {"feed_recommendations", "feed_versions", "post_deletions"}
    feed = _grants("nova_feed")
    granted = set(re.findall(r"GRANT SELECT ON nova\.(\w+)", "\n".join(feed)))
    assert granted == read_path | {f"{t}_local" for t in read_path}, granted
    for table in read_path:
        for name in (table, f"{table}_local"):  # Distributed over `_local` on the cluster
            assert _covers(feed, "SELECT", name), f"nova_feed cannot read {name}"
    assert not any(_covers(feed, p, "events") for p in ("SELECT", "INSERT"))
    # the pipeline: reads and writes rows of every table in sql/clickhouse, changes no schema
    pipeline = _grants("nova")
    create = re.compile(r"CREATE\s+(?:TABLE|MATERIALIZED VIEW|VIEW)\s+(?:IF NOT EXISTS\s+)?(?:\{\{[^}]*\}\}\.)?(\w+)")
    objects = [create.search(p.read_text()) for p in sorted((ROOT / "sql" / "clickhouse").glob("*.sql"))]
    for match in filter(None, objects):
        assert _covers(pipeline, "SELECT", match.group(1)) and _covers(pipeline, "INSERT", match.group(1))
    assert not _covers(pipeline, "ALL", "events") and not _covers(pipeline, "ALTER", "events")
    assert _covers(pipeline, "ALTER DELETE", "feed_recommendations")  # the recompute drops old partitions
    assert _covers(pipeline, "CREATE TABLE", f"eval_lists_{'0' * 12}")  # its evaluation's scratch table
    # the schema's owner: DDL on nova, ON CLUSTER and Distributed
    ddl = _grants("nova_ddl")
    assert "GRANT ALL ON nova.*" in ddl and "GRANT CLUSTER ON *.*" in ddl and "GRANT REMOTE ON *.*" in ddl
    # the read path's limits cannot be lifted by a client (readonly=2 lets it send settings)
    users = ET.parse(DOCKER / "clickhouse" / "users.d" / "nova.xml").getroot()
    constraints = users.find("profiles/feed/constraints")
    assert constraints is not None
    for setting in ("max_execution_time", "max_memory_usage", "max_threads"):
        assert constraints.findtext(f"{setting}/max"), setting
    assert constraints.find("readonly/const") is not None


def test_clickhouse_urls_name_the_right_users(compose: tuple[str, dict]) -> None:
    name, config = compose
    services = config["services"]
    host = "clickhouse"  # the cluster's is the load balancer, not one replica
    for service in DAGSTER_SERVICES:
        env = _env(services[service])
        assert re.match(rf"http://nova:[^@]+@{host}:8123$", env[settings.CLICKHOUSE_URL]), env[settings.CLICKHOUSE_URL]
        assert re.match(rf"http://nova_ddl:[^@]+@{host}:8123$", env[settings.CLICKHOUSE_DDL_URL])
    assert re.match(rf"http://nova_feed:[^@]+@{host}:8123$", _env(services["nova-serve"])[settings.CLICKHOUSE_URL])
    if name == "cluster":
        balancer = services["clickhouse"]
        assert balancer["image"].startswith("haproxy:")
        cfg = (DOCKER / "cluster" / "haproxy" / "haproxy.cfg").read_text()
        nodes = re.findall(r"^\s*server (ch-s\d-r\d) ", cfg, re.MULTILINE)
        cluster = ET.parse(DOCKER / "cluster" / "clickhouse" / "cluster.xml").getroot()
        replicas = [r.findtext("host") for r in cluster.findall("remote_servers/nova/shard/replica")]
        assert sorted(nodes) == sorted(replicas) and "httpchk GET /ping" in cfg
        assert cluster.find("interserver_http_credentials/password").get("from_env")  # type: ignore[union-attr]
        assert cluster.find("zookeeper/identity").get("from_env")  # type: ignore[union-attr]
        assert cluster.find("remote_servers/nova/secret").get("from_env")  # type: ignore[union-attr]


def test_only_a_filtering_proxy_touches_the_docker_socket(compose: tuple[str, dict]) -> None:
    _, config = compose
    services = config["services"]
    for service, spec in services.items():
        mounts = " ".join(str(v) for v in spec.get("volumes", []))
        if service == "docker-proxy":
            assert "/var/run/docker.sock" in mounts and mounts.rstrip().endswith(":ro")
            proxy_env = _env(spec)
            assert proxy_env["EXEC"] == "0" and proxy_env["VOLUMES"] == "0" and proxy_env["BUILD"] == "0"
            assert spec["networks"] == {"docker-api": None} or list(spec["networks"]) == ["docker-api"]
        else:
            assert "docker.sock" not in mounts, f"{service} mounts the Docker socket"
        assert spec.get("user") not in ("root", "0"), f"{service} runs as root"
    assert config["networks"]["docker-api"]["internal"] is True
    for service in ("dagster-daemon", "dagster-webserver"):  # the webserver's Terminate needs the API too
        assert _env(services[service])["DOCKER_HOST"] == "tcp://docker-proxy:2375"
        assert "docker-api" in services[service]["networks"]
    assert _instance()["run_launcher"]["config"]["network"] == "nova"  # runs are not on docker-api


def test_redis_needs_a_password_and_the_app_cannot_flush_it(compose: tuple[str, dict]) -> None:
    _, config = compose
    nodes = {n: s for n, s in config["services"].items() if re.fullmatch(r"redis\d?", n)}
    assert nodes
    for node in nodes.values():
        command = node["command"] if isinstance(node["command"], str) else " ".join(node["command"])
        assert "--user default off" in command
        assert re.search(r"--user nova on \S+ .*-@dangerous", command)
    for service in (*DAGSTER_SERVICES, "nova-serve"):
        assert re.match(r"redis://nova:[^@]+@", _env(config["services"][service])[settings.REDIS_URL])


def test_postgres_roles_are_least_privilege() -> None:
    init = (DOCKER / "postgres" / "init.sh").read_text()
    assert "OWNER TO debezium" not in init and "ALL TABLES IN SCHEMA" not in init
    assert "GRANT CREATE ON DATABASE" not in init
    assert "NOSUPERUSER" in init and "CREATE PUBLICATION dbz_publication" in init
    for path in COMPOSE_FILES.values():
        services = yaml.safe_load(path.read_text())["services"]
        assert _env(services["postgres"])["POSTGRES_USER"] == "postgres"  # the superuser is not the app's role


def test_alerts_reach_someone_and_a_silent_target_alerts(compose: tuple[str, dict]) -> None:
    name, config = compose
    assert "alertmanager" in config["services"]
    prometheus_file = DOCKER / ("cluster/prometheus.yml" if name == "cluster" else "prometheus/prometheus.yml")
    prometheus = yaml.safe_load(prometheus_file.read_text())
    targets = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets == ["alertmanager:9093"]
    jobs = {job["job_name"] for job in prometheus["scrape_configs"]}
    assert {"nova-serve", "clickhouse"} <= jobs
    rules = [
        r for g in yaml.safe_load((DOCKER / "prometheus" / "alerts.yml").read_text())["groups"] for r in g["rules"]
    ]
    assert any(r["expr"].strip() == "up == 0" for r in rules)
    manager = yaml.safe_load((DOCKER / "alertmanager" / "alertmanager.yml").read_text())
    receiver = next(r for r in manager["receivers"] if r["name"] == manager["route"]["receiver"])
    assert receiver["webhook_configs"][0]["url"] == "${ALERT_WEBHOOK_URL}"
    grafana = yaml.safe_load((DOCKER / "grafana" / "provisioning" / "alerting" / "nova-alerts.yaml").read_text())
    assert grafana["contactPoints"][0]["receivers"][0]["settings"]["url"] == "$ALERT_WEBHOOK_URL"
    assert all(r["noDataState"] != "OK" for g in grafana["groups"] for r in g["rules"])
