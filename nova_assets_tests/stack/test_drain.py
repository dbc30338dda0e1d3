"""`nova stack down` drains the memory-only broker into ClickHouse: stopping it loses nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nova_assets import settings
from nova_assets.core.process import free_port
from nova_assets.generate.events import produce_events
from nova_assets.resources import ClickHouseResource, KafkaResource
from nova_assets.stack import Stack
from nova_assets.stack.drain import drain
from nova_assets_tests.defs.ingestion.test_ingestion import FAST, _counts

pytestmark = pytest.mark.integration  # starts the project's services itself


@pytest.fixture
def kafka_only(
    tmp_path: Path, clickhouse: ClickHouseResource, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Stack, KafkaResource]]:
    """A stack of one memory-only broker, loading into the test's ClickHouse database."""
    monkeypatch.setenv(settings.CLICKHOUSE_URL, clickhouse.url)
    monkeypatch.setenv(settings.CLICKHOUSE_DATABASE, clickhouse.database)
    monkeypatch.setenv("NOVA_STACK_SERVICES", "kafka")
    monkeypatch.delenv("NOVA_KAFKA_STORAGE", raising=False)
    stack = Stack(home=tmp_path / "home", ports={"kafka": free_port()})
    stack.up(echo=lambda _m: None)
    kafka = KafkaResource(bootstrap_servers=stack.env()[settings.KAFKA_BOOTSTRAP], client_config={"log_level": 0})
    try:
        yield stack, kafka
    finally:
        stack.down(echo=lambda _m: None, drain=False)


def test_stack_down_loads_what_kafka_holds_before_it_forgets(
    kafka_only: tuple[Stack, KafkaResource], clickhouse: ClickHouseResource
) -> None:
    """The issue's repro: load, send more, `stack down --only kafka`, up, send more, down again."""
    from nova_assets.core.ingestion.loader import IngestSettings, Loader

    stack, kafka = kafka_only
    loaded = produce_events(kafka, rate=0, duration_s=60, total=3000)["valid"]
    Loader(clickhouse, kafka, IngestSettings(**FAST)).run()
    waiting = produce_events(kafka, rate=0, duration_s=60, total=2000)["valid"]  # not loaded by anyone yet
    lines: list[str] = []
    stack.down(only=["kafka"], echo=lines.append)
    assert f"kafka: drained {waiting} messages into ClickHouse (loaded); nothing is lost" in lines
    assert lines[-1] == "kafka: stopped"
    assert _counts(clickhouse) == (loaded + waiting, loaded + waiting, 0)

    stack.up(echo=lambda _m: None)  # memory storage: the topic starts again at offset 0
    fresh = produce_events(kafka, rate=0, duration_s=60, total=1000)["valid"]
    lines.clear()
    stack.down(echo=lines.append)
    assert any("new incarnation" in line for line in lines), lines
    assert f"kafka: drained {fresh} messages into ClickHouse (loaded); nothing is lost" in lines
    total = loaded + waiting + fresh
    assert _counts(clickhouse) == (total, total, 0)


def test_drain_waits_for_a_live_dagster_instead_of_loading_beside_it(
    kafka_only: tuple[Stack, KafkaResource], clickhouse: ClickHouseResource
) -> None:
    """Two loaders at once would break exactly-once: with Dagster alive on this home, drain only waits."""
    stack, kafka = kafka_only
    produced = produce_events(kafka, rate=0, duration_s=60, total=500)["valid"]
    dagster_home = stack.home / "dagster"
    dagster_home.mkdir()
    # a process of this home's Dagster, as `nova dev` starts them (DAGSTER_HOME set, "dagster" in argv)
    alive = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "dagster-daemon"],
        env={**os.environ, "DAGSTER_HOME": str(dagster_home.resolve())},
    )
    try:
        lines: list[str] = []
        result = drain(kafka.bootstrap_servers, clickhouse.url, dagster_home, lines.append, stalled_s=2.0)
    finally:
        alive.kill()
        alive.wait()
    assert result.unloaded == result.left == produced and result.loaded == 0
    assert "not loading them" in result.how and f"pid {alive.pid}" in lines[0]
    assert _counts(clickhouse) == (0, 0, 0)  # it loaded nothing itself
    # with Dagster gone, the same call loads them
    done = drain(kafka.bootstrap_servers, clickhouse.url, dagster_home, lines.append)
    assert done.how == "loaded" and done.left == 0 and _counts(clickhouse) == (produced, produced, 0)


def test_an_orphaned_code_server_does_not_hold_the_drain(
    kafka_only: tuple[Stack, KafkaResource], clickhouse: ClickHouseResource
) -> None:
    """A killed `dagster dev` leaves its code server alive for minutes; it cannot load, so the drain
    loads instead of waiting on it (waiting on one lost the kill soak's post-reset messages)."""
    stack, kafka = kafka_only
    produced = produce_events(kafka, rate=0, duration_s=60, total=300)["valid"]
    dagster_home = stack.home / "dagster"
    dagster_home.mkdir()
    orphan = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "dagster", "api", "grpc", "--heartbeat-timeout", "30"],
        env={**os.environ, "DAGSTER_HOME": str(dagster_home.resolve())},
    )
    try:
        result = drain(kafka.bootstrap_servers, clickhouse.url, dagster_home, lambda _line: None, stalled_s=2.0)
    finally:
        orphan.kill()
        orphan.wait()
    assert result.how == "loaded" and result.left == 0
    assert _counts(clickhouse) == (produced, produced, 0)


@pytest.mark.parametrize(
    ("cmdline", "loads"),
    [
        (["/x/.venv/bin/python", "/x/.venv/bin/dagster", "dev", "-w", "workspace.yaml"], True),
        (["/x/.venv/bin/python", "/x/.venv/bin/dagster-daemon", "run"], True),
        (["/x/.venv/bin/python", "-m", "dagster", "api", "execute_run", "{}"], True),
        (["/x/.venv/bin/python", "-m", "dagster", "api", "grpc", "--heartbeat-timeout", "30"], False),
        (["bash", "-c", "export DAGSTER_HOME=/x; dagster-webserver"], False),
    ],
)
def test_only_dagster_dev_its_daemon_and_runs_can_load(cmdline: list[str], loads: bool) -> None:
    from nova_assets.stack.drain import _can_load

    assert _can_load(cmdline) is loads
