"""`nova bench soak`: `nova dev` as a user runs it, for an hour, judged by its own SLO checks.

Starts `nova dev` (default traffic, every local service, the default schedules) on a fresh
NOVA_HOME with free ports, and reports:

- every asset-check evaluation after minute 5 (`NOVA_BENCH_SOAK_GREEN_AFTER`), and which did not
  pass; recomputes, cache warms and ingestion run change-overs in the window;
- event-to-visible P95 in the minute around each change-over beside the minute before it;
- the RSS and the CPU (cores over the minute before) of every kind of process, and the size of
  NOVA_HOME, at minute 10 and at the end (growth per hour), and the most active parts of any table;
- with `NOVA_BENCH_SOAK_KILL=kafka,clickhouse,...` (units of the supervisor: services, `serve`,
  `traffic-events`, `traffic-app`, `traffic-reads`, `dagster-daemon`), each is killed with
  SIGKILL once, `NOVA_BENCH_SOAK_KILL_EVERY` seconds apart from `NOVA_BENCH_SOAK_KILL_START` (120 s
  after start, once the supervisor runs), and the seconds until
  the supervisor reports it restarted;
- at the end, exactly-once: traffic stops, the memory-only broker is drained into ClickHouse, and
  every offset of the current nova.events log is loaded or dead-lettered once, no event twice, and
  each mirror holds what Postgres holds (unless the broker was killed: what it held is lost, and
  `kafka_log_continuity` says so).

`NOVA_BENCH_SOAK_MINUTES` (60) sets the length; NOVA_BENCH_SMOKE=1 makes it 4 minutes.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
from confluent_kafka import TopicPartition

from bench.common import SMOKE, report
from bench.parts import records
from bench.parts.procs import _processes, cores_by_part, cpu_seconds, home_mb, rss_by_part
from nova_assets.core.process import free_port, stop_group
from nova_assets.resources import ClickHouseResource, KafkaResource
from nova_assets.stack import Stack
from nova_assets.topics import APP_TABLES

MINUTES = float(os.environ.get("NOVA_BENCH_SOAK_MINUTES", "4" if SMOKE else "60"))
GREEN_AFTER_S = float(os.environ.get("NOVA_BENCH_SOAK_GREEN_AFTER", "300"))
KILL = [k for k in os.environ.get("NOVA_BENCH_SOAK_KILL", "").split(",") if k]
KILL_EVERY_S = float(os.environ.get("NOVA_BENCH_SOAK_KILL_EVERY", "30"))
KILL_START_S = float(os.environ.get("NOVA_BENCH_SOAK_KILL_START", "120"))
MIRRORS = APP_TABLES
# the process to kill for a supervisor unit that is not a stack service
KILL_NEEDLES = {
    "serve": "nova_assets.cli serve",
    "traffic-events": "generate events",
    "traffic-app": "generate app",
    "traffic-reads": "generate reads",
    "dagster-daemon": "dagster._daemon",
}


def _kill(home: Path, stack: Stack, unit: str) -> int | None:
    if unit in stack.services:
        pid = stack.services[unit].pid()
    else:
        needle = KILL_NEEDLES.get(unit, unit)
        pids = [p for p, cmd in _processes(home) if needle in cmd]
        pid = min(pids) if pids else None
    if pid:
        os.kill(pid, signal.SIGKILL)
    return pid


def _restarted_after(log: Path, unit: str, since: float) -> float | None:
    """Seconds from `since` to the supervisor's "<unit> restarted" line (dagster for its daemon)."""
    name = "dagster" if unit == "dagster-daemon" else unit
    try:
        lines = log.read_text().splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        if f"supervisor: {name} restarted" not in line:
            continue
        at = dt.datetime.strptime(line[:19], "%Y-%m-%d %H:%M:%S").timestamp()
        if at >= int(since):
            return max(0.0, at - since)
    return None


def activity(dagster_home: Path, since: float) -> dict[str, Any]:
    """Recomputes, warms and ingestion hand-overs (their release times) since `since`."""
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        counts = {}
        for key in ("feed_recommendations", "feed_cache"):
            records_filter = dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), after_timestamp=since)
            counts[key] = len(instance.fetch_materializations(records_filter, limit=10_000).records)
        runs = instance.get_runs(dg.RunsFilter(job_name="kafka_ingestion"))
        released = sorted(
            float(r.tags["nova/released"])
            for r in runs
            if "nova/released" in r.tags and float(r.tags["nova/released"]) >= since
        )
        failed_runs = [r.job_name for r in runs if r.status == dg.DagsterRunStatus.FAILURE]
    return {"recomputes": counts["feed_recommendations"], "warms": counts["feed_cache"], "changeovers": released,
            "failed_ingestion_runs": len(failed_runs)}  # fmt: skip


def e2v_around(ch: ClickHouseResource, at: float) -> tuple[float, float]:
    """e2v P95 of events loaded in the minute before `at`, and in the minute around it."""
    q = (
        "SELECT quantileExact(0.95)(toFloat64(ingested_at - event_time)) FROM events WHERE"
        " ingested_at >= fromUnixTimestamp64Milli({s:Int64}) AND ingested_at < fromUnixTimestamp64Milli({e:Int64})"
    )
    before = ch.query(q, parameters={"s": int((at - 90) * 1000), "e": int((at - 30) * 1000)})
    around = ch.query(q, parameters={"s": int((at - 30) * 1000), "e": int((at + 30) * 1000)})
    return float(before.result_rows[0][0]), float(around.result_rows[0][0])


def exactly_once(stack: Stack, ch: ClickHouseResource, kafka_killed: bool) -> dict[str, Any]:
    """With traffic stopped: Debezium catches up, the broker is drained into ClickHouse, then every
    offset of the current nova.events log is loaded or dead-lettered once and the mirrors match Postgres."""
    env = stack.env()
    time.sleep(5)  # Debezium publishes the last changes
    kafka = KafkaResource(bootstrap_servers=env["NOVA_KAFKA_BOOTSTRAP"])
    consumer = kafka.consumer()
    try:
        meta = consumer.list_topics("nova.events", timeout=10).topics["nova.events"]
        high = {
            p: consumer.get_watermark_offsets(TopicPartition("nova.events", p), timeout=10) for p in meta.partitions
        }
    finally:
        consumer.close()
    echo = lambda line: print(f"  {line}", file=sys.stderr)  # noqa: E731
    stack.down(["cdc"], echo=echo)  # first: its heartbeats would keep the broker from draining
    stack.down(["kafka"], echo=echo, drain=True)
    incarnation = ch.query(
        "SELECT argMax(incarnation, seen_at) FROM kafka_incarnations WHERE topic = 'nova.events'"
    ).result_rows[0][0]
    loaded = ch.query(
        "SELECT count(), uniqExact(kafka_partition, kafka_offset) FROM events WHERE kafka_incarnation = {i:String}",
        parameters={"i": incarnation},
    ).result_rows[0]
    dead = ch.query(
        "SELECT count() FROM dead_letters WHERE topic = 'nova.events' AND incarnation = {i:String} "
        "AND error_kind != 'expired'",
        parameters={"i": incarnation},
    ).result_rows[0][0]
    # per partition: how many offsets are loaded or dead-lettered, the first and the last (the
    # restarted broker may re-create the topic with its own partition count)
    covered = {
        int(p): (int(n), int(first), int(last))
        for p, n, first, last in ch.query(
            "SELECT p, uniqExact(o), min(o), max(o) FROM ("
            " SELECT kafka_partition AS p, kafka_offset AS o FROM events WHERE kafka_incarnation = {i:String}"
            " UNION ALL SELECT partition AS p, offset AS o FROM dead_letters WHERE topic = 'nova.events'"
            " AND incarnation = {i:String} AND error_kind != 'expired') GROUP BY p",
            parameters={"i": incarnation},
        ).result_rows
    }
    # every offset from a partition's start to its last is there (no gap), and the reported end is
    # reached (Tansu reports the last batch's start + 1: it can be short)
    gaps = {
        str(p): {"covered": n, "first": first, "last": last, "watermarks": list(high.get(p, (0, 0)))}
        for p, (n, first, last) in covered.items()
        if not (first == high.get(p, (0, 0))[0] and n == last - first + 1 and last + 1 >= high.get(p, (0, 0))[1])
    }
    missing = [p for p, (lo, hi) in high.items() if hi > lo and p not in covered]
    total, unique = ch.query("SELECT count(), uniqExact(event_id) FROM events").result_rows[0]
    in_log = sum(h - lo for lo, h in high.values())
    with psycopg.connect(env["NOVA_POSTGRES_DSN"]) as conn:
        postgres = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in MIRRORS}  # type: ignore[index]
    mirrors = {t: int(ch.query(f"SELECT count() FROM {t} FINAL").result_rows[0][0]) for t in MIRRORS}
    return {
        "log_messages": in_log,
        "log_loaded": int(loaded[0]),
        "log_loaded_once": int(loaded[0]) == int(loaded[1]),
        "log_dead_letters": int(dead),
        "log_partitions": len(high),
        "log_accounted": not gaps and not missing,
        "log_gaps": {**gaps, **{str(p): "nothing loaded" for p in missing}},
        "events_duplicated": int(total) - int(unique),
        "mirrors_match_postgres": mirrors == postgres,
        "mirror_rows": mirrors,
        "postgres_rows": postgres,
        "kafka_killed": kafka_killed,
    }


def run(as_json: bool = False) -> dict[str, Any]:
    keep = os.environ.get("NOVA_BENCH_SOAK_HOME")
    home = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="nova-soak-"))
    home.mkdir(parents=True, exist_ok=True)
    try:
        return _soak(home, as_json)
    finally:
        if not keep:
            shutil.rmtree(home, ignore_errors=True)


def _soak(home: Path, as_json: bool) -> dict[str, Any]:
    ports = {name: free_port() for name in ("clickhouse", "kafka", "redis", "postgres")}
    env = {**os.environ, "NOVA_HOME": str(home), "NOVA_STACK_SERVICES": "clickhouse,kafka,redis,postgres,cdc"}
    for name, port in ports.items():
        env[f"NOVA_{name.upper()}_PORT"] = str(port)
    for name in ("NOVA_CLICKHOUSE_URL", "NOVA_KAFKA_BOOTSTRAP", "NOVA_REDIS_URL", "NOVA_POSTGRES_DSN"):
        env.pop(name, None)
    ui, serve = free_port(), free_port()
    began = time.time()
    log = open(home / "dev.log", "ab")  # noqa: SIM115 - closed below
    dev = subprocess.Popen(
        [sys.executable, "-m", "nova_assets.cli", "dev", "--port", str(ui), "--serve-port", str(serve)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    os.environ.update({k: v for k, v in env.items() if k.startswith("NOVA_")})
    stack = Stack(home=home, ports=ports)
    end = began + MINUTES * 60
    samples: dict[str, dict[str, Any]] = {}
    kills: list[dict[str, Any]] = []
    next_kill = began + KILL_START_S
    pending = list(KILL)
    cpu_at: float | None = None
    cpu_before: dict[int, tuple[str, float]] | None = None
    end_cpu_at: float | None = None
    end_cpu_before: dict[int, tuple[str, float]] = {}
    try:
        while time.time() < end:
            if dev.poll() is not None:
                raise RuntimeError(f"nova dev exited with {dev.returncode}; see {home / 'dev.log'}")
            now = time.time()
            if "min10" not in samples and now - began >= 540 and cpu_at is None:
                cpu_at, cpu_before = now, cpu_seconds(home)  # a minute of CPU before minute 10
            if "min10" not in samples and now - began >= 600:
                cores = cores_by_part(cpu_before or {}, cpu_seconds(home), now - (cpu_at or now - 1))
                samples["min10"] = {"rss_mb": rss_by_part(home), "home_mb": home_mb(home), "at_s": now - began,
                                    "cpu_cores": cores}  # fmt: skip
            if "min10" in samples and end - now <= 62 and end_cpu_at is None:
                end_cpu_at, end_cpu_before = now, cpu_seconds(home)
            if pending and now >= next_kill and (home / "supervisor.log").exists():
                unit = pending[0]
                pid = _kill(home, stack, unit)
                if pid is None and now < next_kill + 90:  # not started yet (reads start after the first warm)
                    time.sleep(1.0)
                    continue
                pending.pop(0)
                kills.append({"unit": unit, "pid": pid, "at": time.time()})
                print(f"  killed {unit} (pid {pid}) at +{time.time() - began:.0f} s", file=sys.stderr)
                next_kill = time.time() + KILL_EVERY_S
            time.sleep(1.0)
        samples["end"] = {"rss_mb": rss_by_part(home), "home_mb": home_mb(home), "at_s": time.time() - began}
        if end_cpu_at is not None:
            samples["end"]["cpu_cores"] = cores_by_part(end_cpu_before, cpu_seconds(home), time.time() - end_cpu_at)
        ch = ClickHouseResource(url=stack.env()["NOVA_CLICKHOUSE_URL"])
        parts = dict(
            ch.query(
                "SELECT table, count() FROM system.parts WHERE active AND database = currentDatabase() "
                "GROUP BY table ORDER BY count() DESC LIMIT 5"
            ).result_rows
        )
        dagster_home = home / "dagster"
        evaluations, failures = records.check_evaluations(dagster_home, began + GREEN_AFTER_S)
        failed = [f"{name} at {time.strftime('%H:%M:%S', time.localtime(at))}: {what}" for at, name, what in failures]
        acts = activity(dagster_home, began)
        ratios = []
        for at in acts["changeovers"]:
            before, around = e2v_around(ch, at)
            if before > 0:
                ratios.append(around / before)
        for kill in kills:
            kill["restarted_after_s"] = _restarted_after(home / "supervisor.log", kill["unit"], kill["at"])
    except BaseException:
        stop_group(dev, grace_s=30.0, first=signal.SIGTERM)
        stack.down(echo=lambda _line: None, drain=False)  # a failed soak leaves nothing running
        raise
    finally:
        log.close()
    stop_group(dev, grace_s=60.0, first=signal.SIGTERM)
    try:
        exact = exactly_once(stack, ch, kafka_killed="kafka" in KILL)
    except Exception as exc:  # the hour's figures are reported all the same, with what failed at the end
        exact = {"exactly_once": False, "error": str(exc)}
    finally:
        stack.down(echo=lambda _line: None, drain=False)
    first = samples.get("min10")
    hours = (samples["end"]["at_s"] - first["at_s"]) / 3600 if first else 0.0
    growth = {
        "home_mb_per_hour": round((samples["end"]["home_mb"] - first["home_mb"]) / hours, 1)
        if first and hours > 0 else None
    }  # fmt: skip
    summary: dict[str, Any] = {
        "minutes": MINUTES,
        "green_after_s": GREEN_AFTER_S,
        "check_evaluations": evaluations,
        "check_failures": len(failed),
        "failed_checks": failed[:50],
        "recomputes": acts["recomputes"],
        "warms": acts["warms"],
        "changeovers": len(acts["changeovers"]),
        "failed_ingestion_runs": acts["failed_ingestion_runs"],
        "e2v_changeover_ratio_max": round(max(ratios), 2) if ratios else None,
        "rss_mb": samples,
        **growth,
        "parts_max": max(parts.values()) if parts else 0,
        "parts_by_table": parts,
        "kills": [{k: v for k, v in kill.items() if k != "at"} for kill in kills],
        **{f"exact_{k}": v for k, v in exact.items()},
    }
    rows = [
        ("check evaluations after", f"{GREEN_AFTER_S:.0f} s", f"{evaluations} evaluated, {len(failed)} not passed"),
        ("recomputes / warms", f"{acts['recomputes']} / {acts['warms']}", f"in {MINUTES:g} min"),
        ("run change-overs", f"{len(acts['changeovers'])}",
         f"e2v P95 around / before, max {summary['e2v_changeover_ratio_max']}"),
        ("NOVA_HOME", f"{samples['end']['home_mb']} MB", f"growth {growth['home_mb_per_hour']} MB/h after minute 10"),
        ("active parts (max table)", f"{summary['parts_max']}", str(parts)),
        ("nova.events log", f"{exact.get('log_messages')}",
         f"loaded once + dead-lettered = log: {exact.get('log_accounted')}"),
        ("events twice", f"{exact.get('events_duplicated')}", "duplicated event_id"),
        ("mirrors = Postgres", f"{exact.get('mirrors_match_postgres')}", str(exact.get("mirror_rows"))),
        *([("exactly-once check failed", "error", exact["error"][:200])] if "error" in exact else []),
    ]  # fmt: skip
    rows += [(f"killed {k['unit']}", f"{k['restarted_after_s']}", "s until restarted") for k in kills]
    report(f"nova bench soak: `nova dev` for {MINUTES:g} min", rows, summary, as_json)
    for line in failed[:20]:
        print(f"  not passed: {line}", file=sys.stderr)
    print(f"  RSS (MB): {samples}", file=sys.stderr)
    return summary
