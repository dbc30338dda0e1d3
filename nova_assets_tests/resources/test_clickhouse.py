from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nova_assets.errors import ConfigError, LockTimeout
from nova_assets.resources.clickhouse import ClickHouseResource

WRITER = """
import sys, time
from nova_assets.resources.clickhouse import ClickHouseResource
ch = ClickHouseResource(url=sys.argv[1], lock_timeout_s=60)
ch.command("CREATE TABLE IF NOT EXISTS t (worker UInt8, i UInt32) ENGINE = MergeTree ORDER BY (worker, i)")
for i in range(20):
    ch.insert("t", [[int(sys.argv[2]), i]], ["worker", "i"])
    time.sleep(0.01)
print("done")
"""


def test_create_insert_select_with_bound_parameters(chdb_url: str) -> None:
    ch = ClickHouseResource(url=chdb_url)
    assert ch.ping().startswith("26.")
    ch.command("CREATE TABLE IF NOT EXISTS kv (k String, v UInt32) ENGINE = MergeTree ORDER BY k")
    assert ch.insert("kv", [["a", 1], ["b", 2], ["x' OR 1=1 --", 3]], ["k", "v"]) == 3
    hostile = "x' OR 1=1 --"
    rows = ch.query("SELECT k, v FROM kv WHERE k = {k:String}", parameters={"k": hostile}).result_rows
    assert rows == [(hostile, 3)]
    db = ch.query("SELECT database FROM system.tables WHERE name = 'kv'").result_rows
    assert db == [("nova",)]


def test_raw_honours_format(chdb_url: str) -> None:
    ch = ClickHouseResource(url=chdb_url)
    assert ch.raw("SELECT 1 AS a, 'x' AS b FORMAT JSONEachRow") == b'{"a":1,"b":"x"}\n'
    assert ch.raw("SELECT 1, 'x'") == b"1\tx\n"


def test_two_processes_share_one_directory(chdb_url: str) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, chdb_url, str(w)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for w in (1, 2)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        assert out.strip() == b"done"
    ch = ClickHouseResource(url=chdb_url)
    counts = ch.query("SELECT worker, count() FROM t GROUP BY worker ORDER BY worker").result_rows
    assert counts == [(1, 20), (2, 20)]


def test_lock_wait_names_the_holder(chdb_url: str) -> None:
    holder = ClickHouseResource(url=chdb_url)
    hold = """
import sys, time
from nova_assets.resources.clickhouse import ClickHouseResource
with ClickHouseResource(url=sys.argv[1]).session() as c:
    print("holding", flush=True)
    time.sleep(8)
"""
    holder.ping()
    proc = subprocess.Popen([sys.executable, "-c", hold, chdb_url], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"holding"
        waiter = ClickHouseResource(url=chdb_url, lock_timeout_s=0.5)
        with pytest.raises(LockTimeout) as info:
            waiter.ping()
        message = str(info.value)
        assert f"pid {proc.pid}" in message
        assert "NOVA_CLICKHOUSE_LOCK_TIMEOUT" in message
        assert "Cannot lock file" not in message
    finally:
        proc.kill()
        proc.wait()
    assert holder.ping()  # the lock of a killed holder is released by the kernel


def test_threads_share_the_engine(chdb_url: str) -> None:
    ch = ClickHouseResource(url=chdb_url)
    ch.command("CREATE TABLE IF NOT EXISTS th (i UInt32) ENGINE = MergeTree ORDER BY i")
    errors: list[BaseException] = []

    def work(base: int) -> None:
        try:
            for i in range(10):
                ch.insert("th", [[base + i]], ["i"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n * 100,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert ch.query("SELECT count() FROM th").result_rows == [(40,)]


def test_bad_urls_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="NOVA_CLICKHOUSE_URL"):
        ClickHouseResource(url="clickhouse://host").ping()
    with pytest.raises(ConfigError, match="absolute path"):
        ClickHouseResource(url="chdb://relative/dir").ping()
    started = time.monotonic()
    with pytest.raises(Exception, match=r"NOVA_CLICKHOUSE_URL"):
        ClickHouseResource(url="http://default:secret@127.0.0.1:1/", connect_timeout_s=1).ping()
    assert time.monotonic() - started < 30


STICKY_HOLDER = """
import sys, time
from nova_assets.resources.clickhouse import ClickHouseResource
ch = ClickHouseResource(url=sys.argv[1])
ch.command("CREATE TABLE IF NOT EXISTS s (i UInt32) ENGINE = MergeTree ORDER BY i")
with ch.session(sticky=True) as client:
    client.command("INSERT INTO s VALUES (1)")
print("idle", flush=True)  # the engine stays open, idle, in this process
time.sleep(30)
"""


def test_sticky_engine_is_handed_over_to_a_waiting_process(chdb_url: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", STICKY_HOLDER, chdb_url], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"idle"
        started = time.monotonic()
        other = ClickHouseResource(url=chdb_url, lock_timeout_s=10)
        assert other.query("SELECT count() FROM s").result_rows == [(1,)]
        assert time.monotonic() - started < 2.0  # handed over in milliseconds, not at the holder's exit
        assert proc.poll() is None  # the holder is still alive
    finally:
        proc.kill()
        proc.wait()
