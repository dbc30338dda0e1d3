from __future__ import annotations

import os
import subprocess
import sys

from nova_assets.resources import ClickHouseResource


def _sql(url: str, query: str, database: str = "nova") -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "NOVA_CLICKHOUSE_URL": url, "NOVA_CLICKHOUSE_DATABASE": database}
    return subprocess.run(
        [sys.executable, "-m", "nova_assets.cli", "sql", query], capture_output=True, env=env, timeout=60
    )


def test_nova_sql_prints_server_formatting(fresh_clickhouse: ClickHouseResource) -> None:
    url, db = fresh_clickhouse.url, fresh_clickhouse.database
    assert _sql(url, "CREATE TABLE t (a UInt8, b String) ENGINE = MergeTree ORDER BY a", db).returncode == 0
    assert _sql(url, "INSERT INTO t VALUES (1, 'x'), (2, 'y')", db).returncode == 0
    assert _sql(url, "SELECT * FROM t ORDER BY a", db).stdout == b"1\tx\n2\ty\n"
    assert _sql(url, "SELECT a FROM t ORDER BY a FORMAT JSONEachRow", db).stdout == b'{"a":1}\n{"a":2}\n'
    failed = _sql(url, "SELECT nope FROM t", db)
    assert failed.returncode != 0
    assert b"UNKNOWN_IDENTIFIER" in failed.stderr


def test_nova_sql_bad_url() -> None:
    failed = _sql("mysql://x", "SELECT 1")
    assert failed.returncode != 0
    assert b"NOVA_CLICKHOUSE_URL" in failed.stderr
