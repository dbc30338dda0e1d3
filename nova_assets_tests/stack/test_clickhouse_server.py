"""The local ClickHouse server speaks ClickHouse's HTTP interface: clickhouse-connect and plain HTTP."""

from __future__ import annotations

import datetime as dt
import gzip
import os
import statistics
import threading
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from nova_assets.stack import Stack
from nova_assets.stack.sql_services import MALLOC_ENV
from nova_assets_tests.stack.helpers import client_for, http


@pytest.mark.parametrize("compress", [False, True, "lz4", "zstd", "gzip"])
def test_clickhouse_connect_round_trip(server: tuple[str, str], database: str, compress: bool | str) -> None:
    client = client_for(server, database, compress)
    client.command(
        "CREATE TABLE t (id UUID, n UInt32, s String, ts DateTime64(3), tags Array(String)) "
        "ENGINE = MergeTree ORDER BY n"
    )
    rows = [[uuid.uuid4(), i, f"s{i}'\t\n", dt.datetime(2026, 1, 1, 12), ["a", "b"]] for i in range(5000)]
    summary = client.insert("t", rows, column_names=["id", "n", "s", "ts", "tags"])  # Native, compressed
    assert summary.written_rows == 5000
    client.raw_insert(
        "t",
        ["id", "n", "s", "ts", "tags"],
        insert_block=b'{"id":"00000000-0000-0000-0000-000000000001","n":99999,"s":"j","ts":"2026-01-01 00:00:00",'
        b'"tags":[]}\n',
        fmt="JSONEachRow",
    )
    found = client.query(
        "SELECT count(), max(n) FROM t WHERE n > {low:UInt32} AND s != {s:String} AND has(tags, {tag:String})",
        parameters={"low": 10, "s": "x' OR 1=1 --", "tag": "a"},
    ).result_rows
    assert found == [(4989, 4999)]
    back = client.query("SELECT id, s, ts FROM t WHERE n = 7").result_rows
    assert back == [(rows[7][0], rows[7][2], rows[7][3])]
    # a streamed result larger than one block comes back whole
    with client.query_rows_stream("SELECT number FROM numbers(300000)") as stream:
        assert sum(1 for _ in stream) == 300000
    assert client.query_df("SELECT n FROM t ORDER BY n LIMIT 3")["n"].tolist() == [0, 1, 2]


def test_settings_apply_to_their_request_only(server: tuple[str, str], database: str) -> None:
    client = client_for(server, database, False)
    sql = "SELECT value FROM system.settings WHERE name = 'max_threads'"
    default = client.query(sql).result_rows
    for _ in range(10):  # every pooled connection ends up asked both ways
        assert client.query(sql, settings={"max_threads": 1}).result_rows == [("1",)]
        assert client.query(sql).result_rows == default
    with pytest.raises(DatabaseError, match="115"):
        client.query("SELECT 1", settings={"no_such_setting_here": 1})
    assert client.query("SELECT 1").result_rows == [(1,)]


def test_errors_carry_code_status_and_header(server: tuple[str, str], database: str) -> None:
    client = client_for(server, database, True)
    with pytest.raises(DatabaseError) as info:
        client.query("SELECT * FROM missing_table")
    assert "Code: 60" in str(info.value) and "UNKNOWN_TABLE" in str(info.value)
    status, headers, body = http(server, {"query": "SELECT * FROM missing_table", "database": database})
    assert status == 404
    assert headers["x-clickhouse-exception-code"] == "60"
    assert body.startswith(b"Code: 60. DB::Exception:")
    status, _, body = http(server, {"query": "SELEC 1"})
    assert status == 400 and b"SYNTAX_ERROR" in body
    # an error after the first rows of a stream is marked as ClickHouse marks it
    stream = client.query_rows_stream(
        "SELECT number, throwIf(number = 250000) FROM numbers(300000)", settings={"max_block_size": 10000}
    )
    with pytest.raises(DatabaseError, match="395"), stream:
        list(stream)


def test_plain_http_like_curl(server: tuple[str, str], database: str) -> None:
    address, password = server
    with urllib.request.urlopen(f"http://{address}/ping", timeout=5) as response:
        assert response.read() == b"Ok.\n"
    status, headers, body = http(server, {"query": "SELECT 1, 'a\tb'"})  # GET, TabSeparated
    assert (status, body) == (200, b"1\ta\\tb\n")
    assert headers["x-clickhouse-format"] == "TabSeparated" and "x-clickhouse-query-id" in headers
    status, _, _ = http(server, {"database": database}, b"CREATE TABLE kv (k String, v UInt8) ENGINE = Log")
    assert status == 200
    status, headers, _ = http(server, {"query": "INSERT INTO kv FORMAT CSV", "database": database}, b"a,1\nb,2\n")
    assert status == 200 and '"written_rows":"2"' in headers["x-clickhouse-summary"]
    status, _, _ = http(server, {"database": database}, b"INSERT INTO kv FORMAT TSV\nc\t3\n")
    assert status == 200
    body = gzip.compress(b"INSERT INTO kv VALUES ('d', 4)")
    status, _, _ = http(server, {"database": database}, body, {"Content-Encoding": "gzip"})
    assert status == 200
    params = {"query": "SELECT k FROM kv WHERE v >= {v:UInt8} ORDER BY k", "param_v": "2", "database": database}
    assert http(server, params)[2] == b"b\nc\nd\n"
    params = {**params, "enable_http_compression": "1", "default_format": "JSONEachRow"}
    status, headers, body = http(server, params, headers={"Accept-Encoding": "gzip"})
    assert headers["content-encoding"] == "gzip" and gzip.decompress(body) == b'{"k":"b"}\n{"k":"c"}\n{"k":"d"}\n'
    # GET only reads
    status, headers, _ = http(server, {"query": "DROP TABLE kv", "database": database})
    assert status == 403 and headers["x-clickhouse-exception-code"] == "164"
    # no or wrong credentials
    status, headers, body = http(server, {"query": "SELECT 1"}, auth=False)
    assert status == 403 and headers["x-clickhouse-exception-code"] == "516"
    assert password.encode() not in body
    address_only = f"http://{address}/?" + urllib.parse.urlencode(
        {"query": "SELECT 1", "user": "default", "password": password}
    )
    with urllib.request.urlopen(address_only, timeout=5) as response:
        assert response.read() == b"1\n"


def test_inserts_stay_fast_during_a_long_query(server: tuple[str, str], database: str) -> None:
    """One heavy query (10 s of full CPU) must not hold up the small inserts of ingestion."""
    client = client_for(server, database, True)
    client.command("CREATE TABLE small (i UInt32) ENGINE = MergeTree ORDER BY i")
    heavy = client_for(server, database, True)
    done = threading.Event()
    heavy_seconds: list[float] = []

    def long_query() -> None:
        started = time.monotonic()
        heavy.query(
            "SELECT count() FROM numbers(1000000000000) WHERE sipHash64(number) % 7 = 1",
            settings={"max_execution_time": 10, "timeout_overflow_mode": "break"},
        )
        heavy_seconds.append(time.monotonic() - started)
        done.set()

    thread = threading.Thread(target=long_query)
    thread.start()
    time.sleep(0.5)
    latencies = []
    i = 0
    while not done.is_set():
        started = time.perf_counter()
        client.insert("small", [[i], [i + 1]], column_names=["i"])
        latencies.append(time.perf_counter() - started)
        i += 2
        time.sleep(0.02)
    thread.join()
    assert heavy_seconds and heavy_seconds[0] >= 9
    assert len(latencies) >= 100
    p99 = statistics.quantiles(latencies, n=100)[98]
    assert p99 < 0.2, f"insert P99 {p99 * 1000:.0f} ms during the long query"
    assert client.query("SELECT count() FROM small").result_rows == [(i,)]


def test_long_parameters_sent_as_a_form(server: tuple[str, str], database: str) -> None:
    """clickhouse-connect moves the query and its parameters into a multipart form when they are long."""
    client = client_for(server, database, True)
    wanted = [str(uuid.uuid4()) for _ in range(20_000)]  # ~750 KB of parameter: too long for a URL
    found = client.query(
        "SELECT length({ids:Array(UUID)}), has({ids:Array(UUID)}, toUUID({last:String}))",
        parameters={"ids": wanted, "last": wanted[-1]},
    ).result_rows
    assert found == [(20_000, 1)]


def test_the_server_hands_freed_memory_back(stack: Stack) -> None:
    """glibc's arenas are bounded in the server process (a burst of clients left 60 MB resident
    without it); a user's own MALLOC_* settings still win."""
    pid = stack.services["clickhouse"].pid()
    assert pid is not None
    environ = dict(
        item.split(b"=", 1) for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in item
    )
    for name, value in MALLOC_ENV.items():
        assert environ.get(name.encode()) == os.environ.get(name, value).encode(), name


def test_small_parts_are_written_as_one_file(server: tuple[str, str], database: str) -> None:
    """A micro-batch's part is packed into one file (chdb.xml's `min_bytes_for_full_part_storage`):
    on this machine's ext4 most of a small insert's CPU went to allocating the inodes of a part's
    ~15 files, three parts per events insert with its views. Large parts keep the full layout."""
    client = client_for(server, database, True)
    client.command("CREATE TABLE parts_probe (k UInt64, v String) ENGINE = MergeTree ORDER BY k")
    client.command("SYSTEM STOP MERGES parts_probe")  # both parts stay as written
    client.command("INSERT INTO parts_probe SELECT number, 'x' FROM numbers(10)")
    client.command("INSERT INTO parts_probe SELECT number, randomPrintableASCII(200) FROM numbers(200000)")
    layouts = client.query(
        "SELECT rows, part_storage_type FROM system.parts WHERE database = {db:String} AND table = 'parts_probe' "
        "AND active ORDER BY rows",
        parameters={"db": database},
    ).result_rows
    assert layouts == [(10, "Packed"), (200000, "Full")]
    assert client.query("SELECT count(), sum(k) FROM parts_probe").result_rows == [(200010, 199999 * 100000 + 45)]
