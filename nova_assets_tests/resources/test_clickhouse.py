from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nova_assets.errors import ConfigError
from nova_assets.resources.clickhouse import ClickHouseResource
from nova_assets.stack import Stack

WRITER = """
import sys, time
from nova_assets.resources.clickhouse import ClickHouseResource
ch = ClickHouseResource(url=sys.argv[1], database=sys.argv[3])
ch.command("CREATE TABLE IF NOT EXISTS t (worker UInt8, i UInt32) ENGINE = MergeTree ORDER BY (worker, i)")
for i in range(20):
    ch.insert("t", [[int(sys.argv[2]), i]], ["worker", "i"])
    time.sleep(0.01)
print("done")
"""


def test_create_insert_select_with_bound_parameters(fresh_clickhouse: ClickHouseResource) -> None:
    ch = fresh_clickhouse
    assert ch.ping().startswith("26.")
    ch.command("CREATE TABLE IF NOT EXISTS kv (k String, v UInt32) ENGINE = MergeTree ORDER BY k")
    assert ch.insert("kv", [["a", 1], ["b", 2], ["x' OR 1=1 --", 3]], ["k", "v"]) == 3
    hostile = "x' OR 1=1 --"
    rows = ch.query("SELECT k, v FROM kv WHERE k = {k:String}", parameters={"k": hostile}).result_rows
    assert rows == [(hostile, 3)]
    db = ch.query("SELECT database FROM system.tables WHERE name = 'kv'").result_rows
    assert db == [(ch.database,)]


def test_raw_honours_format(fresh_clickhouse: ClickHouseResource) -> None:
    assert fresh_clickhouse.raw("SELECT 1 AS a, 'x' AS b FORMAT JSONEachRow") == b'{"a":1,"b":"x"}\n'
    assert fresh_clickhouse.raw("SELECT 1, 'x'") == b"1\tx\n"


def test_two_processes_write_through_the_server(fresh_clickhouse: ClickHouseResource) -> None:
    ch = fresh_clickhouse
    ch.ping()  # creates the database
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, ch.url, str(w), ch.database], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for w in (1, 2)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        assert out.strip() == b"done"
    counts = ch.query("SELECT worker, count() FROM t GROUP BY worker ORDER BY worker").result_rows
    assert counts == [(1, 20), (2, 20)]


def test_threads_share_one_client(fresh_clickhouse: ClickHouseResource) -> None:
    ch = fresh_clickhouse
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


def test_chdb_is_for_one_process(chdb_url: str) -> None:
    ch = ClickHouseResource(url=chdb_url)
    ch.command("CREATE TABLE IF NOT EXISTS one (i UInt32) ENGINE = MergeTree ORDER BY i")
    assert ch.insert("one", [[1], [2]], ["i"]) == 2
    assert ch.query("SELECT sum(i) FROM one").result_rows == [(3,)]


def test_chdb_url_of_a_served_directory_names_the_server(stack: Stack) -> None:
    served = stack.services["clickhouse"]
    with pytest.raises(ConfigError) as info:
        ClickHouseResource(url=f"chdb://{served.dir}").ping()
    message = str(info.value)
    assert "NOVA_CLICKHOUSE_URL" in message
    assert f"http://127.0.0.1:{served.port}" in message
    assert "password" not in message and served.password() not in message  # type: ignore[attr-defined]


def test_bad_urls_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="NOVA_CLICKHOUSE_URL"):
        ClickHouseResource(url="clickhouse://host").ping()
    with pytest.raises(ConfigError, match="absolute path"):
        ClickHouseResource(url="chdb://relative/dir").ping()
    started = time.monotonic()
    with pytest.raises(Exception, match=r"NOVA_CLICKHOUSE_URL") as info:
        ClickHouseResource(url="http://default:secret@127.0.0.1:1/", connect_timeout_s=1).ping()
    assert "secret" not in str(info.value)
    assert time.monotonic() - started < 30


def _nice_of_threads(pid: int) -> list[int]:
    """The nice value of every thread of a process (field 19 of /proc/<pid>/task/<tid>/stat)."""
    values = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            values.append(int(stat.read_text().rsplit(")", 1)[1].split()[16]))
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended while listed
    return values


def _can_renice() -> bool:
    """CAP_SYS_NICE (bit 23 of CapEff): without it ClickHouse ignores os_thread_priority."""
    caps = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("CapEff:"))
    return bool(int(caps.split()[1], 16) >> 23 & 1)


@pytest.mark.integration
@pytest.mark.skipif(not _can_renice(), reason="no CAP_SYS_NICE: ClickHouse ignores os_thread_priority (as documented)")
def test_batch_queries_yield_the_cpu_to_streaming(fresh_clickhouse: ClickHouseResource, stack: Stack) -> None:
    """A batch session's query threads run at nice 19 in the server; none keeps it for the next query."""
    (server,) = [s for s in stack.status() if s.name == "clickhouse"]
    assert server.pid is not None
    heavy = "SELECT count() FROM numbers_mt(3000000000) WHERE sipHash64(number) % 7 = 3 SETTINGS max_threads = 2"
    with fresh_clickhouse.batch_session() as batch, fresh_clickhouse.session() as plain:
        assert batch.command("SELECT getSetting('os_thread_priority')") == 19
        assert plain.command("SELECT getSetting('os_thread_priority')") == 0
        seen: set[int] = set()
        worker = threading.Thread(
            target=lambda: batch.command(heavy, settings={"max_execution_time": 2, "timeout_overflow_mode": "break"})
        )
        worker.start()
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline and 19 not in seen:
            seen.update(_nice_of_threads(server.pid))
            time.sleep(0.05)
        worker.join()
        assert 19 in seen, f"no server thread at nice 19 during a batch query: {sorted(seen)}"
        plain.command("SELECT count() FROM numbers_mt(20000000) WHERE sipHash64(number) % 7 = 3")
        time.sleep(0.2)
        assert 19 not in _nice_of_threads(server.pid), "a query thread kept the batch priority"


@pytest.mark.integration
def test_batch_work_runs_at_a_lower_priority_in_its_own_thread(fresh_clickhouse: ClickHouseResource) -> None:
    """The thread doing batch work (and the threads it starts) runs at nice 19; other threads of
    the process keep theirs, and the thread gets its value back afterwards where it may."""

    def nice() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = nice()
    other: list[int] = []
    idle = threading.Event()
    bystander = threading.Thread(target=lambda: (idle.wait(5), other.append(nice())))
    bystander.start()
    with fresh_clickhouse.batch_session() as batch:
        assert nice() == 19
        started: list[int] = []
        child = threading.Thread(target=lambda: started.append(nice()))
        child.start()
        child.join()
        assert started == [19]
        assert batch.command("SELECT 1") == 1
        idle.set()
        bystander.join()
        assert other == [before]
    if _can_renice():
        assert nice() == before
