from __future__ import annotations

import pytest

from nova_assets.core.process import free_port
from nova_assets.errors import ServiceUnavailable
from nova_assets.resources.postgres import PostgresResource
from nova_assets.stack import Stack


def test_query_and_logical_wal(stack: Stack) -> None:
    pg = PostgresResource(dsn=stack.env()["NOVA_POSTGRES_DSN"])
    assert pg.ping().startswith("18")
    with pg.connect() as conn:
        assert conn.execute("SHOW wal_level").fetchone() == ("logical",)
        assert conn.execute("SELECT current_database()").fetchone() == ("nova",)
        assert conn.execute("SELECT %s::int + 1", (41,)).fetchone() == (42,)


def test_unreachable_names_the_setting() -> None:
    dsn = f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/nova"
    with pytest.raises(ServiceUnavailable) as info:
        PostgresResource(dsn=dsn, connect_timeout_s=1).ping()
    assert "NOVA_POSTGRES_DSN" in str(info.value)
    assert "s3cret" not in str(info.value)
