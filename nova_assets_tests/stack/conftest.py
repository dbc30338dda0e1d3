"""Fixtures for the local ClickHouse server's tests: its address and password, clients, plain HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nova_assets.resources import ClickHouseResource
from nova_assets.stack import Stack


@pytest.fixture
def server(stack: Stack) -> tuple[str, str]:
    """(address, password) of the session's ClickHouse server."""
    svc = stack.services["clickhouse"]
    return svc.address, svc.password()  # type: ignore[attr-defined]


@pytest.fixture
def database(fresh_clickhouse: ClickHouseResource) -> Iterator[str]:
    fresh_clickhouse.ping()  # creates it; the fixture drops it afterwards
    yield fresh_clickhouse.database
