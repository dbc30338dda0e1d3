"""The benchmarks in bench/ run on every change: each imports, and `nova bench platform` runs at a tiny size.

A benchmark nothing runs breaks silently (`nova bench platform` once failed on an import for a
whole round). NOVA_BENCH_SMOKE=1 shrinks the platform benchmark's world and windows; its
figures mean nothing at that size, its code paths and report keys are what is checked.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from bench.parts.batch import BatchRun, period_s, split, steady_by_part
from bench.parts.threads import group_of, per_unit_us, thread_cpu
from nova_assets.resources import ClickHouseResource

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted(p.stem for p in (ROOT / "bench").glob("*.py") if p.stem not in ("__init__", "common"))


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_benchmark_imports_and_has_its_entry_point(name: str) -> None:
    module = importlib.import_module(f"bench.{name}")
    assert callable(module.run), f"bench/{name}.py has no run()"


@pytest.mark.integration
@pytest.mark.slow
def test_platform_benchmark_runs_at_a_tiny_size(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "NOVA_BENCH_SMOKE": "1",
        "NOVA_BENCH_PLATFORM_PROBE_SECONDS": "15",  # --find-capacity: one probe, at 1% of the guide's load
        "NOVA_BENCH_PLATFORM_CAPACITY_STEPS": "0.01",
        "NOVA_BENCH_PLATFORM_EVENT_RATE": "100",
        "NOVA_BENCH_PLATFORM_CHANGE_RATE": "10",
        "NOVA_BENCH_PLATFORM_READ_RATE": "10",
        "NOVA_HOME": str(tmp_path / "home"),  # the benchmark starts its own stack; nothing shared
    }
    nova = Path(sys.executable).parent / "nova"
    done = subprocess.run(
        [str(nova), "bench", "platform", "--find-capacity", "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = orjson.loads(done.stdout.strip().splitlines()[-1])
    for key in (
        "e2v_p95_s", "cdc_lag_p95_s", "hit_p95_ms", "miss_p95_ms", "failed_checks", "cpu_cores_by_part",
        "platform_cpu_cores", "platform_idle_cpu_cores", "cpu_us_per_event", "cpu_us_per_change", "cpu_us_per_read",
        "e2v_p95_alone_s", "cdc_lag_p95_alone_s", "hit_p95_alone_ms",
        "platform_cpu_cores_steady", "batch_runs", "platform_cpu_cores_at_shipped_schedules",
        "platform_cpu_cores_steady_by_part",
    ):  # fmt: skip
        assert key in summary, key
    # every failed evaluation says when and what it measured, not only a count
    assert len(summary["failed_check_details"]) == summary["failed_checks"], summary["failed_check_details"]
    assert all({"at_s", "check", "description"} <= set(d) for d in summary["failed_check_details"])
    assert summary["events_measured"] > 0 and summary["changes_measured"] > 0 and summary["reads"] > 0
    assert 0 < summary["platform_cpu_cores"] <= 2.0 * (os.cpu_count() or 2)
    assert 0 < summary["platform_cpu_cores_steady"] <= summary["platform_cpu_cores_at_shipped_schedules"]
    # the app writers' Postgres backends are the load's, told apart from the pipeline's Postgres
    assert "postgres (app writers' backends)" in summary["cpu_cores_by_part"], summary["cpu_cores_by_part"]
    # the CDC process by thread: Debezium's replication reader did work for the changes
    assert summary["cdc_us_per_change_by_thread"].get("debezium reader", 0) > 0, summary["cdc_us_per_change_by_thread"]
    (probe,) = summary["capacity_probes"]
    assert probe["fraction"] == 0.01 and summary["capacity"] in (0.0, 0.01), summary["capacity_probes"]
    assert probe["held"] == (probe["why"] == "") and summary["event_rate"] == 100
    assert sum(probe["read_sources"].values()) > 0 and 0 <= probe["read_hit_share"] <= 1, probe
    assert probe["changes_carried_per_s"] > 0 and probe["changes_written_per_s"] > 0, probe  # the load delivered
    assert all(n >= 0 for n in probe["redis_skipped"].values()) and probe["warmed_users"] > 0, probe
    assert set(probe["redis_removed"]) == {"expired", "evicted", "unlink_calls"}, probe


def test_a_capacity_probe_holds_only_when_every_slo_target_does() -> None:
    """`--find-capacity` stops at the first probe that misses any of the issue's targets."""
    from bench.parts.capacity import misses
    from bench.platform import GUIDE

    def window(e2v: float, cdc: float, hit: float, failed: int = 0, errors: int = 0) -> dict:
        return {
            "e2v": {"p95": e2v}, "cdc": {"p95": cdc}, "failed": failed, "failed_runs": [],
            "failed_names": ["feed_cache/cache_hit_rate (WARN)"] * failed,
            "reads": {"hit": {"p95": hit}, "errors": errors, "timeouts": 0},
        }  # fmt: skip

    assert misses(window(0.9, 1.9, 9.0)) == ""
    assert misses(window(1.1, 1.0, 1.0)) == "e2v P95 1.10 s > 1"
    assert "CDC lag" in misses(window(0.5, 2.5, 1.0)) and "hit P95" in misses(window(0.5, 1.0, 12.0))
    assert misses(window(0.5, 1.0, 1.0, failed=1)) == "1 failed checks (feed_cache/cache_hit_rate (WARN))"
    assert misses(window(float("nan"), 1.0, 1.0)).startswith("e2v P95 nan")  # nothing measured is no pass
    assert misses(window(0.5, 1.0, 1.0, errors=3)) == "3 read errors"
    # a rung whose app writers fell behind was lighter than its name: not a hold, whatever it measured
    short = {**window(0.5, 1.0, 1.0), "changes_asked_per_s": 1000, "changes_written_per_s": 556.1}
    assert misses(short) == "app changes written 556/s < 95% of 1000/s asked (the load generator fell behind)"
    assert misses({**short, "changes_written_per_s": 960.0}) == ""
    assert GUIDE.scaled(0.2) == type(GUIDE)(2_000, 200, 100) and GUIDE.scaled(0.001).reads == 1


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("name", [b for b in BENCHMARKS if b not in ("platform", "soak")])
def test_each_benchmark_runs_at_a_tiny_size(name: str, tmp_path: Path) -> None:
    """Every benchmark's code runs on every change (its figures mean nothing at this size); `soak`
    runs in test_dev.py with its kills, `platform` above with its keys."""
    env = {**os.environ, "NOVA_BENCH_SMOKE": "1", "NOVA_HOME": str(tmp_path / "home")}
    nova = Path(sys.executable).parent / "nova"
    # files, not pipes: a server the benchmark failed to stop would hold a pipe open and hang the test
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        done = subprocess.run(
            [str(nova), "bench", name, "--json"], env=env, cwd=ROOT, stdout=stdout, stderr=stderr, timeout=280
        )
    assert done.returncode == 0, out.read_text()[-2000:] + err.read_text()[-3000:]
    summary = orjson.loads(out.read_text().strip().splitlines()[-1])
    assert isinstance(summary, dict) and summary
    if name == "cdc":  # the Debezium process's CPU per change, split by thread, the Python handler apart
        assert summary["debezium_us_per_change"] > 0 and summary["cpu_us_per_change"] > 0, summary
        assert summary["debezium_us_per_change_debezium"] > 0, summary
        assert 0 < summary["debezium_handler_us_per_change"] < summary["debezium_us_per_change"], summary
        assert summary["cpu_postgres_writer_backends_cores"] >= 0 and "cpu_postgres_cores" in summary, summary


def test_postgres_cpu_splits_into_the_pipeline_and_the_writers_backends() -> None:
    """What stayed alive (walsender, WAL writer) is the pipeline's, counted from its start figure or
    from zero when it began inside the window; the rest of the tree's time is the writers' backends'."""
    from bench.cdc import postgres_split

    before = {1: 1.0, 2: 5.0, 9: 2.0}  # postmaster, walsender, a writer's backend
    after = {1: 1.5, 2: 7.0, 3: 0.5}  # the backend is gone; a WAL writer started inside the window
    split = postgres_split(before, after, tree_s=10.0)
    assert split == {"pipeline": 3.0, "writers": 7.0}
    assert postgres_split(before, after, tree_s=2.0)["writers"] == 0.0  # never below nothing


def test_a_postgres_backend_is_the_loads_when_its_client_is_an_app_writer() -> None:
    """The backend's title names its client's port; the port is found among the writer's sockets."""
    import socket

    from bench.parts.cpu import WRITER_BACKENDS, backend_part, client_ports

    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        try:
            port = client.getsockname()[1]
            assert port in client_ports([os.getpid()])
            title = f"postgres: postgres nova 127.0.0.1({port}) idle"
            assert backend_part("postgres", title, {port}) == WRITER_BACKENDS
            assert backend_part("postgres", "postgres: walsender postgres 127.0.0.1(1) streaming", {port}) == "postgres"
            assert backend_part("postgres", "postgres: walwriter", {port}) == "postgres"
            assert backend_part("nova serve", title, {port}) == "nova serve"
        finally:
            client.close()


@pytest.mark.integration
def test_a_failed_cdc_lag_check_shows_the_burst_before_the_rung(clickhouse: ClickHouseResource) -> None:
    """The CDC timeline covers the checks' 5 minutes before a rung: a bulk write 3 minutes before
    it (lag 5 s) shows as its own bucket beside the rung's steady changes."""
    from bench.parts.lag import cdc_timeline

    now = time.time()
    start = now - 20
    insert = (
        "INSERT INTO likes (user_id, post_id, created_at, version, source_ts, ingested_at) "
        "SELECT generateUUIDv4(number), generateUUIDv4(number + 1000000), now64(), number, "
        "fromUnixTimestamp64Milli({ingested:Int64}) - toIntervalMillisecond({lag_ms:UInt32}), "
        "fromUnixTimestamp64Milli({ingested:Int64}) FROM numbers({n:UInt32})"
    )
    burst_at = (int(start) // 10 - 18) * 10  # a 10 s bucket 3 minutes before the rung
    clickhouse.command(insert, parameters={"ingested": burst_at * 1000 + 500, "lag_ms": 5000, "n": 50})
    clickhouse.command(insert, parameters={"ingested": int(now * 1000) - 5000, "lag_ms": 400, "n": 7})
    lines = cdc_timeline(clickhouse, start, now)
    first_at, first_count, _p95, first_max = lines[0]
    assert (round(first_at + start - burst_at), first_count, first_max) == (0, 50, 5.0)
    assert sum(count for _at, count, _p95, _top in lines) == 57 and lines[-1][3] == 0.4


def test_a_process_cpu_splits_by_the_kernel_names_of_its_threads() -> None:
    """A thread named as the JVM names its JIT compiler is counted as one; Python's own threads
    keep the process's name. Threads stay alive until read: a thread's time leaves /proc with it."""
    burnt, release = threading.Barrier(3), threading.Event()

    def burn(name: bytes | None) -> None:
        if name is not None:  # prctl(PR_SET_NAME), as the JVM names its threads
            ctypes.CDLL(None).prctl(15, ctypes.c_char_p(name), 0, 0, 0)
        end = time.thread_time() + 0.3
        while time.thread_time() < end:
            pass
        burnt.wait()
        release.wait()

    before = thread_cpu(os.getpid())
    workers = [threading.Thread(target=burn, args=(name,)) for name in (b"C2 CompilerThread0", None)]
    for worker in workers:
        worker.start()
    burnt.wait()
    after = thread_cpu(os.getpid())
    release.set()
    for worker in workers:
        worker.join()
    spent = per_unit_us(before, after, 1)  # µs per one unit: the seconds spent, in µs
    assert spent.get("jit compilers", 0) >= 0.25e6, spent
    assert spent.get("python threads", 0) >= 0.25e6, spent
    assert group_of("debezium-postgr") == "debezium reader"
    assert group_of("Python Referenc") == "jpype references"
    assert group_of("Thread-3") == "jvm other"
    assert per_unit_us(before, after, 0) == {}


def test_a_thread_that_runs_two_milliseconds_is_counted_as_such() -> None:
    """A thread's few ms in a window are read at the scheduler's resolution, not the 10 ms tick
    (at which a small load's Debezium reader read 0 µs per change)."""
    done, release = threading.Event(), threading.Event()

    def burn() -> None:
        ctypes.CDLL(None).prctl(15, ctypes.c_char_p(b"debezium-postgr"), 0, 0, 0)
        end = time.thread_time() + 0.002
        while time.thread_time() < end:
            pass
        done.set()
        release.wait()

    worker = threading.Thread(target=burn)
    before = thread_cpu(os.getpid())
    worker.start()
    done.wait()
    after = thread_cpu(os.getpid())
    release.set()
    worker.join()
    assert 1_500 <= per_unit_us(before, after, 1).get("debezium reader", 0) <= 50_000, (before, after)


def test_batch_runs_are_priced_above_the_steady_rate_at_their_shipped_schedules() -> None:
    """0.5 cores steady; a recompute adds 1 core for 20 s (20 core-s, every 600 s shipped) and a
    warm 2 cores for 5 s (10 core-s, every 300 s): 0.5 + 20/600 + 10/300 cores at the shipped crons."""
    timeline = [(t, t + 1.0, 0.5 + (1.0 if 20 <= t < 40 else 0.0) + (2.0 if 60 <= t < 65 else 0.0)) for t in range(100)]
    runs = [
        BatchRun("feed_recommendations_schedule", 20.0, 40.0),
        BatchRun("feed_cache_schedule", 60.0, 65.0),
    ]
    out = split([(float(a), b, c) for a, b, c in timeline], runs)
    assert out["platform_cpu_cores_steady"] == 0.5
    assert [(r["schedule"], r["seconds"], r["core_seconds"]) for r in out["batch_runs"]] == [
        ("feed_recommendations_schedule", 20.0, 20.0),
        ("feed_cache_schedule", 5.0, 10.0),
    ]
    assert out["platform_cpu_cores_at_shipped_schedules"] == round(0.5 + 20 / 600 + 10 / 300, 3)
    assert period_s("*/10 * * * *") == 600 and period_s("7 * * * *") == 3600
    assert split(timeline, [])["platform_cpu_cores_at_shipped_schedules"] == 0.8  # no runs: all of it steady
    # a recompute through the whole window (a short probe): the window's mean stands for the steady rate
    through = split(timeline, [BatchRun("feed_recommendations_schedule", -5.0, 200.0)])
    assert through["platform_cpu_cores_steady"] == 0.8 and through["batch_runs"][0]["core_seconds"] == 0.0
    assert split([], [])["platform_cpu_cores_steady"] == 0.0
    # the same steady samples, part by part
    parts = [(float(t), t + 1.0, {"clickhouse server": 0.3 + (1.0 if 20 <= t < 40 else 0.0), "kafka (tansu)": 0.2})
             for t in range(100)]  # fmt: skip
    assert steady_by_part(parts, runs) == {"clickhouse server": 0.3, "kafka (tansu)": 0.2}
    assert steady_by_part(parts, [BatchRun("x", -5.0, 200.0)]) == {}
