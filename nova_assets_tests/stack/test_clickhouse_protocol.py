"""The local ClickHouse server answers as ClickHouse's HTTP interface does, beyond this project's own calls.

Sessions, corrupt bodies, in-band stream errors, commands, `client_protocol_version`, inline
insert data after `WITH`, binary-safe queries and parameters, and external data; each through
clickhouse-connect and as plain HTTP against the real server of the session's stack.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import io
import threading
import time
import urllib.parse
import urllib.request
import zoneinfo
from pathlib import Path

import clickhouse_connect
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import StreamFailureError
from clickhouse_connect.driver.external import ExternalData
from clickhouse_connect.driver.summary import QuerySummary

from nova_assets.stack import Stack
from nova_assets_tests.stack.helpers import client_for as _client
from nova_assets_tests.stack.helpers import http as _http

Server = tuple[str, str]


def _log_size(stack: Stack) -> int:
    return (stack.home / "clickhouse" / "clickhouse.log").stat().st_size


def _log_since(stack: Stack, offset: int) -> str:
    with open(stack.home / "clickhouse" / "clickhouse.log", "rb") as handle:
        handle.seek(offset)
        return handle.read().decode("utf-8", "replace")


def _session_client(server: Server, database: str, session_id: str) -> Client:
    address, password = server
    client = clickhouse_connect.get_client(dsn=f"http://default:{password}@{address}", session_id=session_id)
    client.database = database
    return client


def test_two_sessions_keep_their_own_temporary_tables_and_settings(server: Server, database: str) -> None:
    one = _session_client(server, database, "nova-test-session-one")
    two = _session_client(server, database, "nova-test-session-two")
    for client, value in ((one, 1), (two, 2)):
        client.command("CREATE TEMPORARY TABLE temp_test (x UInt8)")  # the same name in both
        client.command(f"INSERT INTO temp_test VALUES ({value})")
    assert one.query("SELECT x FROM temp_test").result_rows == [(1,)]
    assert two.query("SELECT x FROM temp_test").result_rows == [(2,)]
    one.command("SET max_threads = 3")
    sql = "SELECT value FROM system.settings WHERE name = 'max_threads'"
    assert one.query(sql).result_rows == [("3",)]
    assert one.query(sql, settings={"max_threads": 1}).result_rows == [("1",)]  # a request's own setting
    assert one.query(sql).result_rows == [("3",)]  # ... and back to the session's, not the default
    assert two.query(sql).result_rows != [("3",)]
    # a request without a session sees neither table, and leaves nothing behind on the pool
    status, headers, _ = _http(server, {"query": "SELECT x FROM temp_test", "database": database})
    assert status == 404 and headers["x-clickhouse-exception-code"] in ("60", "47")
    for _ in range(12):  # more than the pool's connections
        params = {"database": database}
        status, _, body = _http(server, params, b"CREATE TEMPORARY TABLE leak (x UInt8)")
        assert status == 200, body
    status, _, body = _http(server, {"query": "SELECT count() FROM system.tables WHERE is_temporary"})
    assert (status, body) == (200, b"0\n")


def test_session_check_timeout_and_lock(server: Server, database: str) -> None:
    params = {"query": "SELECT 1", "session_id": "nova-never-made", "session_check": "1"}
    status, headers, _ = _http(server, params)
    assert status == 404 and headers["x-clickhouse-exception-code"] == "372"  # SESSION_NOT_FOUND
    status, headers, _ = _http(server, {"query": "SELECT 1", "session_id": "x", "session_timeout": "99999"})
    assert status == 400 and headers["x-clickhouse-exception-code"] == "374"
    # one request at a time per session: a second one meanwhile is SESSION_IS_LOCKED
    slow = {"query": "SELECT sleep(1)", "session_id": "nova-locked"}
    results: list[int] = []
    thread = threading.Thread(target=lambda: results.append(_http(server, slow)[0]))
    thread.start()
    time.sleep(0.3)
    status, headers, _ = _http(server, {"query": "SELECT 1", "session_id": "nova-locked"})
    thread.join()
    assert results == [200]
    assert headers["x-clickhouse-exception-code"] == "373"
    assert _http(server, {"query": "SELECT 1", "session_id": "nova-locked", "session_check": "1"})[0] == 200


@pytest.mark.parametrize("encoding", ["lz4", "zstd", "gzip", "deflate"])
def test_a_corrupt_body_is_a_coded_error_and_the_server_stays_healthy(
    server: Server, database: str, stack: Stack, encoding: str
) -> None:
    offset = _log_size(stack)
    params = {"query": "INSERT INTO t FORMAT TSV", "database": database}
    garbage = b"\x04\x22\x4d\x18" + bytes(range(256)) * 64  # an LZ4 magic, then nonsense
    status, headers, body = _http(server, params, garbage, {"Content-Encoding": encoding})
    assert status == 400, body
    assert headers["x-clickhouse-exception-code"] == "271" and b"CANNOT_DECOMPRESS" in body
    assert _http(server, {"query": "SELECT 1"})[2] == b"1\n"
    assert "Traceback" not in _log_since(stack, offset)


def test_a_stream_that_fails_midway_ends_with_the_in_band_exception(server: Server, database: str) -> None:
    client = _client(server, database, False)
    # 100,000 rows of ~110 bytes before the failure: more than the server's 1 MiB response buffer
    sql = "SELECT number, repeat('x', 100) AS pad, throwIf(number = 100000) FROM numbers(200000)"
    settings = {"max_block_size": 1000, "wait_end_of_query": 0}
    rows = 0
    with pytest.raises(StreamFailureError, match="throwIf"), client.query_rows_stream(sql, settings=settings) as stream:
        for _ in stream:
            rows += 1
    assert 0 < rows <= 100000
    # the raw body: data, then ClickHouse's tagged block
    status, headers, body = _http(server, {"query": sql, "max_block_size": "1000", "database": database})
    assert status == 200
    tag = headers["x-clickhouse-exception-tag"]
    assert body.endswith(f"{tag}\r\n__exception__\r\n".encode()) and f"__exception__\r\n{tag}\r\n".encode() in body
    # wait_end_of_query: the whole result is held, so the failure is an HTTP error with its code
    status, headers, _ = _http(server, {"query": sql, "max_block_size": "1000", "wait_end_of_query": "1"})
    assert status == 500 and headers["x-clickhouse-exception-code"] == "395"
    assert client.command("SELECT 1") == 1


def test_commands_answer_with_a_summary(server: Server, database: str) -> None:
    client = _client(server, database, False)
    assert isinstance(client.command("DROP TABLE IF EXISTS nothing_here"), QuerySummary)
    assert "query_id" in client.query("SET count_distinct_implementation = 'uniq'").first_item
    status, headers, _ = _http(server, {"database": database}, b"DROP TABLE IF EXISTS nothing_here")
    assert status == 200 and "x-clickhouse-format" not in headers and "x-clickhouse-summary" in headers
    assert _http(server, {"query": "SELECT 1"})[1]["x-clickhouse-format"] == "TabSeparated"


def test_native_keeps_column_time_zones_for_a_versioned_client(server: Server, database: str) -> None:
    client = _client(server, database, False)
    assert client.protocol_version  # the client's probe found a server that honours the version
    client.command("CREATE TABLE zoned (id UInt8, at DateTime('Asia/Kolkata'), utc DateTime('UTC')) ENGINE = Memory")
    moment = dt.datetime(2026, 3, 1, 9, 30, tzinfo=zoneinfo.ZoneInfo("Asia/Kolkata"))
    client.insert("zoned", [[1, moment, moment]], column_names=["id", "at", "utc"])
    row = client.query("SELECT id, at, utc FROM zoned").first_row
    assert row[1] == moment and row[1].tzinfo is not None and row[1].utcoffset() == dt.timedelta(hours=5, minutes=30)
    assert client.query("SELECT toTypeName(at) FROM zoned").first_row == ("DateTime('Asia/Kolkata')",)
    raw = client.raw_query("SELECT toDateTime(0, 'Asia/Kolkata') AS dt FORMAT Native")
    assert raw == bytes.fromhex("0101026474084461746554696d6500000000")  # revision 0: no zone, no block info
    raw = client.raw_query(
        "SELECT toDateTime(0, 'Asia/Kolkata') AS dt FORMAT Native", settings={"client_protocol_version": 54405}
    )
    assert raw.startswith(b"\x01\x00\x02\xff\xff\xff\xff\x00\x01\x01\x02dt\x18DateTime('Asia/Kolkata')")


def test_with_insert_takes_inline_data(server: Server, database: str) -> None:
    client = _client(server, database, False)
    client.command("CREATE TABLE lines (s String) ENGINE = Memory")
    client.command("WITH 1 AS y INSERT INTO lines (s) FORMAT TabSeparated\na;b\nc\n")
    status, _, body = _http(server, {"database": database}, b"WITH 'x' AS y INSERT INTO lines FORMAT CSV\n\"d;e\"\n")
    assert status == 200, body
    assert client.query("SELECT s FROM lines ORDER BY s").result_rows == [("a;b",), ("c",), ("d;e",)]
    # an INSERT inside a string or a comment is not one
    assert (
        client.raw_query("WITH ' INSERT INTO ' AS v SELECT v; -- INSERT INTO", fmt="TabSeparated") == b" INSERT INTO \n"
    )


def test_bodies_and_parameters_are_binary_safe(server: Server, database: str) -> None:
    status, _, body = _http(server, {}, b"SELECT hex('\xff\xfe')")
    assert (status, body) == (200, b"FFFE\n")
    client = _client(server, database, False)
    blob = bytes(range(128, 256))  # none of it UTF-8 (and no escape character: parameters are escaped text)
    address, password = server
    url = f"http://{address}/?query={urllib.parse.quote('SELECT hex({p:String})')}&param_p={urllib.parse.quote(blob)}"
    request = urllib.request.Request(url)
    request.add_header("Authorization", "Basic " + base64.b64encode(f"default:{password}".encode()).decode())
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.read().strip() == blob.hex().upper().encode()
    sink = io.BytesIO()
    pq.write_table(pa.table({"movie": ["12 Angry Men", "Alien"], "rating": [9.0, 8.5]}), sink)
    found = client.query(
        "SELECT movie FROM format(Parquet, $p$) ORDER BY rating DESC", parameters={"$p$": sink.getvalue()}
    ).first_item
    assert found == {"movie": "12 Angry Men"}


def test_external_data(server: Server, database: str, tmp_path: Path) -> None:
    client = _client(server, database, True)
    movies = tmp_path / "movies.csv"
    movies.write_text("movie,year\n12 Angry Men,1957\nAlien,1979\nbad row,baddate\n")
    data = ExternalData(str(movies), fmt="CSVWithNames", structure=["movie String", "year UInt16"])
    data.add_file(file_name="ids", data=b"1957\n", types="UInt16")
    result = client.query(
        "SELECT movie FROM movies WHERE year IN (SELECT _1 FROM ids)",
        external_data=data,
        settings={"input_format_allow_errors_num": 1},
    ).result_rows
    assert result == [("12 Angry Men",)]
    assert _http(server, {"query": "SELECT count() FROM system.tables WHERE is_temporary"})[2] == b"0\n"
    # a session's query with external data leaves no table in the session
    session = _session_client(server, database, "nova-test-external")
    session.query("SELECT * FROM movies", external_data=data, settings={"input_format_allow_errors_num": 1})
    assert session.query("SELECT count() FROM system.tables WHERE is_temporary").first_item == {"count()": 0}


def test_gzip_body_still_works_after_errors(server: Server, database: str) -> None:
    """A failed insert with a large body is drained: the client sees the error, not a reset."""
    big = gzip.compress(b"not\tvalid\tfor\tthis\ttable\n" * 200_000)
    params = {"query": "INSERT INTO no_such_table FORMAT TSV", "database": database}
    status, headers, body = _http(server, params, big, {"Content-Encoding": "gzip"})
    assert status == 404 and headers["x-clickhouse-exception-code"] == "60", body


def test_show_create_of_a_system_table_and_show_policies(server: Server, database: str) -> None:
    client = _client(server, database, False)
    result = client.query("SHOW CREATE TABLE system.tables")
    assert result.column_names == ("statement",)
    statement = result.first_item["statement"]
    assert statement.startswith("CREATE TABLE system.tables\n(\n    `database` String COMMENT '")
    assert "\n)\nENGINE = SystemTables\nCOMMENT '" in statement
    assert client.query("SHOW CREATE system.one").first_item["statement"] == (
        "CREATE TABLE system.one\n(\n    `dummy` UInt8\n)\nENGINE = SystemOne\nCOMMENT 'This table contains a single"
        " row with a single dummy UInt8 column containing the value 0. Used when the table is not specified"
        " explicitly, for example in queries like `SELECT 1`.'"
    )
    status, headers, body = _http(server, {"query": "SHOW CREATE TABLE system.`numbers` FORMAT JSONEachRow"})
    assert status == 200 and body.startswith(b'{"statement":"CREATE TABLE system.numbers\\n(\\n    `number` UInt64')
    # a table that is not there is the engine's error, as before; tables of other databases are the engine's
    status, headers, _ = _http(server, {"query": "SHOW CREATE TABLE system.no_such_table"})
    assert status == 404 and headers["x-clickhouse-exception-code"] == "60"
    client.command("CREATE TABLE own (id UInt8) ENGINE = Memory")
    assert client.command("SHOW CREATE TABLE own").startswith(f"CREATE TABLE {database}.own")
    # the default user manages access, as in ClickHouse's own test setup: SHOW statements answer
    assert client.command("SHOW POLICIES") == ""
    assert "TO default" in client.command("SHOW GRANTS")


def test_uris_as_long_as_clickhouse_takes(server: Server, database: str) -> None:
    # clients bind parameters in the URL: 5,000 ids are ~200 KB, past httptools' 64 KiB URL parser
    client = _client(server, database, False)
    ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(5_000)]
    assert client.query("SELECT length({ids:Array(UUID)}) AS n", parameters={"ids": ids}).first_row == (5_000,)
    status, _, body = _http(server, {"query": "SELECT length({s:String})", "param_s": "a" * 300_000})
    assert (status, body) == (200, b"300000\n")
    # past ClickHouse's http_max_uri_size (1 MiB) the request is refused, and the server goes on
    status, _, _ = _http(server, {"query": "SELECT 1", "param_s": "a" * (1 << 20)})
    assert status == 400
    assert client.command("SELECT 1") == 1
