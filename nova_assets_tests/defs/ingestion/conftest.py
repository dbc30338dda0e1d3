from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from nova_assets.defs.schema.ddl import apply_object
from nova_assets.defs.schema.sql_files import Renderer, load_objects
from nova_assets.resources import ClickHouseResource, KafkaResource
from nova_assets.stack.manager import KafkaService
from nova_assets.stack.process import free_port


@pytest.fixture
def kafka(tmp_path: Path) -> Iterator[KafkaResource]:
    """A fresh Tansu broker per test (memory storage: no topics or offsets leak between tests)."""
    service = KafkaService(tmp_path / "home", free_port())
    service.start()
    try:
        resource = KafkaResource(bootstrap_servers=service.address, timeout_s=5, client_config={"log_level": 0})
        for _ in range(100):
            if service.healthy()[0]:
                break
            import time

            time.sleep(0.1)
        yield resource
    finally:
        service.stop()


@pytest.fixture
def clickhouse(chdb_url: str) -> ClickHouseResource:
    ch = ClickHouseResource(url=chdb_url, lock_timeout_s=10)
    with ch.session() as client:
        for obj in load_objects():
            apply_object(client, obj, Renderer("nova"))
    return ch


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst
