"""The benchmarks in bench/ run on every change: each imports, and `nova bench platform` runs at a tiny size.

A benchmark nothing runs breaks silently (`nova bench platform` once failed on an import for a
whole round). NOVA_BENCH_SMOKE=1 shrinks the platform benchmark's world and windows; its
figures mean nothing at that size, its code paths and report keys are what is checked.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

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
        "NOVA_BENCH_PLATFORM_SECONDS": "15",
        "NOVA_BENCH_PLATFORM_EVENT_RATE": "100",
        "NOVA_BENCH_PLATFORM_CHANGE_RATE": "10",
        "NOVA_BENCH_PLATFORM_READ_RATE": "10",
        "NOVA_HOME": str(tmp_path / "home"),  # the benchmark starts its own stack; nothing shared
    }
    nova = Path(sys.executable).parent / "nova"
    done = subprocess.run(
        [str(nova), "bench", "platform", "--json"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = orjson.loads(done.stdout.strip().splitlines()[-1])
    for key in (
        "e2v_p95_s", "cdc_lag_p95_s", "hit_p95_ms", "miss_p95_ms", "failed_checks", "cpu_cores_by_part",
        "platform_cpu_cores", "platform_idle_cpu_cores", "cpu_us_per_event", "cpu_us_per_change", "cpu_us_per_read",
        "e2v_p95_alone_s", "cdc_lag_p95_alone_s", "hit_p95_alone_ms",
    ):  # fmt: skip
        assert key in summary, key
    assert summary["events_measured"] > 0 and summary["changes_measured"] > 0 and summary["reads"] > 0
    assert 0 < summary["platform_cpu_cores"] <= 2.0 * (os.cpu_count() or 2)


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
