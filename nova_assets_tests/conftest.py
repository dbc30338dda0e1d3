"""Test fixtures: one real local stack (ClickHouse server over chDB, Tansu, valkey, Postgres) for the session.

It runs under a temporary NOVA_HOME on free ports, started and stopped by the project's own
stack code, so tests never touch a developer's `.nova` or a system service.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from nova_assets.core.process import free_port
from nova_assets.core.schema.ddl import apply_all
from nova_assets.core.schema.sql_files import Renderer
from nova_assets.resources import ClickHouseResource, KafkaResource, RedisResource
from nova_assets.stack import Stack
from nova_assets.stack.services import KafkaService
from nova_assets_tests.world import World

#: fixtures that start or use the real local services: a test that needs one is an integration test
SERVICE_FIXTURES = frozenset({"stack"})


@pytest.hookimpl(tryfirst=True)  # before -m selects by these marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test unit, integration or ui by what it uses, unless it says so itself."""
    for item in items:
        if any(item.get_closest_marker(name) for name in ("unit", "integration", "ui")):
            continue
        if "ui" in item.path.parts:
            item.add_marker(pytest.mark.ui)
        elif SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
        else:
            item.add_marker(pytest.mark.unit)


# The session stack runs without CDC (its JVM costs ~15 s); the CDC tests start `nova cdc` themselves.
os.environ["NOVA_STACK_SERVICES"] = "clickhouse,kafka,redis,postgres"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("nova-home")
    ports = {name: free_port() for name in ("clickhouse", "kafka", "redis", "postgres")}
    local = Stack(home=home, ports=ports)
    local.up(echo=lambda _msg: None)
    saved = {k: os.environ.get(k) for k in local.env()}
    os.environ.update(local.env())
    try:
        yield local
    finally:
        local.down(echo=lambda _msg: None, drain=False)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def chdb_url(tmp_path: Path) -> str:
    """A private chDB directory for one test (single-process use only)."""
    return f"chdb://{tmp_path / 'clickhouse'}"


@pytest.fixture
def fresh_clickhouse(stack: Stack) -> Iterator[ClickHouseResource]:
    """The session's ClickHouse server with a fresh, empty database for one test."""
    resource = ClickHouseResource(url=stack.env()["NOVA_CLICKHOUSE_URL"], database=f"test_{uuid.uuid4().hex[:12]}")
    yield resource
    resource.command(f"DROP DATABASE IF EXISTS {resource.database} SYNC")


@pytest.fixture
def redis_resource(stack: Stack) -> RedisResource:
    """The session stack's Redis, emptied for the test."""
    resource = RedisResource(url=stack.env()["NOVA_REDIS_URL"])
    resource.client().flushdb()
    return resource


@pytest.fixture
def world(fresh_clickhouse: ClickHouseResource) -> World:
    """A fresh database with the schema and a small known social graph."""
    ch = fresh_clickhouse
    with ch.session() as client:
        apply_all(client, Renderer(ch.database))
    w = World(ch)
    w.populate()
    return w


@pytest.fixture
def kafka(tmp_path: Path) -> Iterator[KafkaResource]:
    """A fresh Tansu broker per test (memory storage: no topics or offsets leak between tests)."""
    service = KafkaService(tmp_path / "home", free_port())
    service.start_and_wait()
    try:
        yield KafkaResource(bootstrap_servers=service.address, timeout_s=5, client_config={"log_level": 0})
    finally:
        service.stop()


@pytest.fixture
def clickhouse(fresh_clickhouse: ClickHouseResource) -> ClickHouseResource:
    """A fresh database on the session's ClickHouse server, with the schema applied."""
    ch = fresh_clickhouse
    with ch.session() as client:
        apply_all(client, Renderer(ch.database))
    return ch


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst
