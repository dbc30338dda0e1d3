"""The local server's request counts per query shape (NOVA_CLICKHOUSE_QUERY_STATS): literals fold, windows flush."""

from __future__ import annotations

from pathlib import Path

import orjson

from nova_assets.stack.clickhouse_http.stats import QueryStats, shape


def test_queries_differing_only_in_values_share_a_shape() -> None:
    one = shape("SELECT * FROM events WHERE user_id = 'a' AND n > 10 AND v = {v:UInt32}")
    two = shape("SELECT  *  FROM events WHERE user_id = 'bb' AND n > 2000 AND v = {v:UInt32}")
    assert one == two == "SELECT * FROM events WHERE user_id = ? AND n > ? AND v = ?"
    assert shape("INSERT INTO t (a, b)", "Native") == "INSERT INTO t (a, b) FORMAT Native"
    assert len(shape("SELECT " + "x, " * 500 + "y")) <= 160


def test_a_window_is_written_as_one_json_line_and_then_forgotten(tmp_path: Path) -> None:
    path = tmp_path / "stats.jsonl"
    stats = QueryStats(str(path), window_s=3600)
    for n in range(3):
        stats.took(stats.record(f"SELECT {n}"), 0.002)
    stats.took(stats.record("INSERT INTO t", "JSONEachRow"), 0.010)
    stats.record("SELECT slow")  # counted before it answers: listed with no time yet
    stats.maybe_flush()  # the window is not over: nothing yet
    assert not path.exists()
    stats.maybe_flush(force=True)
    line = orjson.loads(path.read_text().splitlines()[0])
    assert line["requests"] == 5
    # the most time first: that, not the count, is what costs the server's cores
    assert line["shapes"] == [
        ["INSERT INTO t FORMAT JSONEachRow", 1, 10.0],
        ["SELECT ?", 3, 6.0],
        ["SELECT slow", 1, 0.0],
    ]
    assert stats.counts == {} and stats.ms == {}
    assert QueryStats("").record("SELECT 1") == ""  # off: records nothing, writes nothing
