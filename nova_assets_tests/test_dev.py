"""`nova dev` heals itself: each local service and process is killed once during a short run, the
supervisor brings it back within seconds, and ingestion stays exactly once (`nova bench soak`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[1]
KILLED = ("kafka", "clickhouse", "redis", "postgres", "cdc", "serve", "traffic-events", "dagster-daemon")
#: Debezium's JVM starts in 3-15 s on these 2-core machines (`nova stack up`, this round): 10.4 s
#: after its kill failed a CI run at the end of the suite. The others restart within seconds.
RESTART_LIMIT_S = {"cdc": 20.0}


@pytest.mark.integration
@pytest.mark.slow
def test_every_killed_service_is_restarted_and_nothing_is_loaded_twice(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "NOVA_BENCH_SMOKE": "1",
        "NOVA_BENCH_SOAK_MINUTES": "3",
        "NOVA_BENCH_SOAK_KILL": ",".join(KILLED),
        "NOVA_BENCH_SOAK_KILL_START": "60",
        "NOVA_BENCH_SOAK_KILL_EVERY": "10",
        "NOVA_BENCH_SOAK_HOME": str(tmp_path / "home"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "nova_assets.cli", "bench", "soak", "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = orjson.loads(proc.stdout.strip().splitlines()[-1])
    kills = {k["unit"]: k for k in result["kills"]}
    assert set(kills) == set(KILLED), result["kills"]
    for unit, kill in kills.items():
        assert kill["pid"], f"{unit} was not running when its turn came"
        limit = RESTART_LIMIT_S.get(unit, 10.0)
        assert kill["restarted_after_s"] is not None and kill["restarted_after_s"] <= limit, (unit, kill)
    # the broker was killed first: what it held then is lost (a topic reset), and every offset of
    # the log it has since is loaded (or dead-lettered) exactly once, through every other kill
    assert result["exact_log_messages"] > 0
    exact = {k: v for k, v in result.items() if k.startswith("exact_")}
    assert result["exact_log_loaded_once"] and result["exact_log_accounted"], str(exact)
    assert result["exact_events_duplicated"] == 0


def test_dagster_nice_is_read_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from nova_assets.dev import dagster_nice
    from nova_assets.errors import ConfigError

    monkeypatch.delenv("NOVA_DAGSTER_NICE", raising=False)
    assert dagster_nice() == 5
    monkeypatch.setenv("NOVA_DAGSTER_NICE", "0")
    assert dagster_nice() == 0
    monkeypatch.setenv("NOVA_DAGSTER_NICE", "25")
    with pytest.raises(ConfigError, match="NOVA_DAGSTER_NICE"):
        dagster_nice()
