"""`nova bench platform`: the whole local platform at once, on one stack, as a user runs it.

One stack (the ClickHouse server, Tansu, valkey, Postgres, Debezium) and the real Dagster
daemon with the project's sensor and schedules: ingestion runs are launched by
`kafka_ingestion_sensor`, `feed_recommendations` and `feed_cache` by their schedules, the SLO
checks every minute. First each load alone (events, CDC changes, feed reads), then everything
together for NOVA_BENCH_PLATFORM_SECONDS (default 300): events at 10,000/s, app changes at
1,000/s through Debezium, `nova serve` read at a fixed rate (90% warmed users, 10% cold), the
recompute and the cache warm during the window. Every together-figure is printed beside its
alone-figure from the same run.

Latencies are read where users read them: event-to-visible is `ingested_at - event_time` of the
events in ClickHouse, CDC lag `ingested_at - source_ts` of the mirrors (the same columns the SLO
checks read), reads are timed by the client.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import orjson
import redis

from bench.common import report
from bench.feed import FOLLOWS, GENERATE
from nova_assets.cli import first_feeds
from nova_assets.defs.schema.ddl import apply_all
from nova_assets.defs.schema.sql_files import Renderer
from nova_assets.resources import ClickHouseResource
from nova_assets.stack import Stack
from nova_assets.stack.process import free_port

ROOT = Path(__file__).resolve().parent.parent
#: the issue's load by default; NOVA_BENCH_PLATFORM_{EVENT,CHANGE,READ}_RATE find what one machine sustains
EVENT_RATE = int(os.environ.get("NOVA_BENCH_PLATFORM_EVENT_RATE", "10000"))
CHANGE_RATE = int(os.environ.get("NOVA_BENCH_PLATFORM_CHANGE_RATE", "1000"))
READ_RATE = int(os.environ.get("NOVA_BENCH_PLATFORM_READ_RATE", "500"))
ALONE_S, WARMUP_S = 40, 10
USERS, POSTS, AUTHORS, EVENTS = 20_000, 50_000, 10_000, 1_000_000
MIRRORS = ("users", "posts", "likes", "comments", "follows")

READER = """
import http.client, random, sys, threading, time, orjson
port, rate, seconds, users_file = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
warm = [u for u in open(users_file).read().split() if u]
rng = random.Random()  # fresh cold ids every run: a repeated id would be an L1 hit
THREADS = 64  # a slow miss holds up only its own thread's schedule
out = {"hit": [], "miss": [], "errors": 0, "timeouts": 0, "sent": 0}
lock = threading.Lock()
start = time.monotonic() + 0.2
def work(k):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    local = {"hit": [], "miss": [], "errors": 0, "timeouts": 0, "sent": 0}
    i = 0
    while True:
        due = start + (i * THREADS + k) / rate  # open loop: a fixed schedule, not as fast as answers come
        if due - start > seconds:
            break
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        i += 1
        user = rng.choice(warm) if rng.random() < 0.9 else "00000000-0000-4000-8000-%012d" % rng.randrange(10**12)
        t0 = time.perf_counter()
        local["sent"] += 1
        try:
            conn.request("GET", "/feed/" + user + "?limit=20")
            response = conn.getresponse()
            body = response.read()
            ms = (time.perf_counter() - t0) * 1000 + max(0.0, -delay) * 1000  # late starts count
            if response.status != 200:
                local["errors"] += 1
                continue
            source = orjson.loads(body)["source"]
            local["hit" if source in ("l1", "redis") else "miss"].append(ms)
        except TimeoutError:
            local["timeouts"] += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        except Exception:
            local["errors"] += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    with lock:
        for key in ("hit", "miss"):
            out[key].extend(local[key])
        for key in ("errors", "timeouts", "sent"):
            out[key] += local[key]
threads = [threading.Thread(target=work, args=(k,)) for k in range(THREADS)]
for t in threads: t.start()
for t in threads: t.join()
print(orjson.dumps(out).decode())
"""


#: how a process's command line names its part of the platform (first match wins)
PARTS = (
    ("clickhouse_server", "clickhouse server"),
    ("tansu", "kafka (tansu)"),
    ("postgres", "postgres"),
    ("-server", "redis (valkey)"),
    ("nova_assets.cli cdc", "debezium (nova cdc)"),
    ("nova_assets.cli serve", "nova serve"),
    ("generate events", "event generator"),
    ("generate app", "app generator"),
    ("dagster-daemon", "dagster daemon"),
    ("api grpc", "dagster code servers"),
    ("execute_run", "dagster runs"),
    ("multiprocessing", "dagster runs"),
    ("dagster", "dagster runs"),
    ("http.client", "read load (client)"),
)


class CpuSampler:
    """CPU seconds per part of the platform over a window, from /proc every second."""

    def __init__(self) -> None:
        self.last: dict[int, float] = {}
        self.parts: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.started = 0.0

    @staticmethod
    def _read() -> dict[int, tuple[str, float]]:
        ticks = os.sysconf("SC_CLK_TCK")
        out = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            part = next((name for needle, name in PARTS if needle in cmd), "")
            if part:
                out[int(entry.name)] = (part, (int(fields[11]) + int(fields[12])) / ticks)
        return out

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            self._sample()

    def _sample(self) -> None:
        for pid, (part, seconds) in self._read().items():
            self.parts[part] = self.parts.get(part, 0.0) + seconds - self.last.get(pid, 0.0)
            self.last[pid] = seconds

    def __enter__(self) -> CpuSampler:
        self.last = {pid: seconds for pid, (_part, seconds) in self._read().items()}
        self.started = time.monotonic()
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self._sample()
        self.elapsed = time.monotonic() - self.started

    def shares(self) -> dict[str, float]:
        """Each part's CPU as a share of one core, over the window (2 cores = 2.0 in all)."""
        return {k: round(v / self.elapsed, 3) for k, v in sorted(self.parts.items(), key=lambda kv: -kv[1])}


def _quantiles(values: list[float]) -> dict[str, float]:
    import numpy as np

    if not values:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "max": float("nan"), "n": 0}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(max(values)), "n": len(values)}


class Platform:
    """The stack, `nova serve` and the Dagster daemon under one temporary NOVA_HOME."""

    def __init__(self, home: Path) -> None:
        self.home = home
        ports = {name: free_port() for name in ("clickhouse", "kafka", "redis", "postgres")}
        os.environ["NOVA_STACK_SERVICES"] = "clickhouse,kafka,redis,postgres,cdc"
        for name, port in ports.items():
            os.environ[f"NOVA_{name.upper()}_PORT"] = str(port)
        self.stack = Stack(home=home, ports=ports)
        self.serve_port = free_port()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.daemon: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}
        self.log = open(home / "platform.log", "ab")  # noqa: SIM115 - closed in stop()

    def start(self) -> ClickHouseResource:
        self.stack.up(echo=lambda m: print(f"  {m}", file=sys.stderr))
        dagster_home = self.home / "dagster"
        dagster_home.mkdir()
        shutil.copyfile(ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
        self.env = {**os.environ, **self.stack.env(), "DAGSTER_HOME": str(dagster_home), **CRONS}
        os.environ.update(self.stack.env())
        ch = ClickHouseResource(url=self.env["NOVA_CLICKHOUSE_URL"])
        with ch.session() as client:
            apply_all(client, Renderer(ch.database))
        return ch

    def spawn(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            list(args), env={**self.env, **(env or {})}, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def nova(self, *args: str) -> subprocess.Popen[bytes]:
        return self.spawn(sys.executable, "-m", "nova_assets.cli", *args)

    def start_daemon(self) -> None:
        """dagster-daemon with the project's workspace; the crons put a recompute and a warm in the window."""
        daemon = str(Path(sys.executable).parent / "dagster-daemon")
        self.daemon = self.spawn(daemon, "run", "-w", str(ROOT / "workspace.yaml"))

    def schedules(self, action: str) -> None:
        """`dagster schedule start|stop` for the project's schedules (as the UI's toggle does)."""
        dagster = str(Path(sys.executable).parent / "dagster")
        for name in SCHEDULES:
            subprocess.run(
                [dagster, "schedule", action, name, "-w", str(ROOT / "workspace.yaml")],
                env=self.env, cwd=ROOT, capture_output=True, check=True, timeout=120,
            )  # fmt: skip

    @staticmethod
    def _stop_group(proc: subprocess.Popen[bytes]) -> None:
        """Stop a spawned process and everything it started (its session): the daemon's runs too."""
        for sig, wait_s in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # children that outlived their leader

    def stop_daemon(self) -> None:
        if self.daemon is not None:
            self._stop_group(self.daemon)
            self.daemon = None

    def stop(self) -> None:
        self.stop_daemon()
        for proc in self.procs:
            self._stop_group(proc)
        self.stack.down(echo=lambda _m: None, drain=False)
        self.log.close()


SCHEDULES = ("feed_recommendations_schedule", "feed_cache_schedule", "slo_checks_every_minute")
CRONS = {"NOVA_RECOMMENDATIONS_CRON": "*/2 * * * *", "NOVA_CACHE_CRON": "1-59/2 * * * *", "NOVA_SLO_CRON": "* * * * *"}


def _e2v(ch: ClickHouseResource, start: float, end: float) -> dict[str, float]:
    """Event-to-visible of the events produced in [start, end): what the SLO check reads."""
    rows = ch.query(
        "SELECT dateDiff('millisecond', event_time, ingested_at) / 1000.0 FROM events "
        "WHERE event_time >= fromUnixTimestamp64Milli({a:Int64}) AND event_time < fromUnixTimestamp64Milli({b:Int64})",
        parameters={"a": int(start * 1000), "b": int(end * 1000)},
    ).result_rows
    return _quantiles([r[0] for r in rows])


def _cdc_lag(ch: ClickHouseResource, start: float, end: float) -> dict[str, float]:
    """Commit in Postgres → visible in ClickHouse, for the changes committed in [start, end)."""
    union = " UNION ALL ".join(
        f"SELECT dateDiff('millisecond', source_ts, ingested_at) / 1000.0 AS lag FROM {t} "
        "WHERE source_ts >= fromUnixTimestamp64Milli({a:Int64}) AND source_ts < fromUnixTimestamp64Milli({b:Int64})"
        for t in MIRRORS
    )
    rows = ch.query(union, parameters={"a": int(start * 1000), "b": int(end * 1000)}).result_rows
    return _quantiles([r[0] for r in rows])


def _reads(platform: Platform, users_file: Path, seconds: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", READER, str(platform.serve_port), str(READ_RATE), str(seconds), str(users_file)],
        stdout=subprocess.PIPE,
        env=platform.env,
    )


def _read_figures(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=600)
    raw = orjson.loads(out.strip().splitlines()[-1])
    return {
        "hit": _quantiles(raw["hit"]),
        "miss": _quantiles(raw["miss"]),
        "errors": raw["errors"],
        "timeouts": raw["timeouts"],
        "sent": raw["sent"],
    }


def _wait_until(what: str, check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise RuntimeError(f"timed out after {timeout_s:g} s waiting for {what}")


def _failed_checks(dagster_home: Path, since: float) -> tuple[int, int, list[str]]:
    """(evaluations, evaluations that did not pass, their names) recorded since `since`."""
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    try:
        records = instance.get_event_records(
            dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, after_timestamp=since),
            limit=100_000,
        )
        evaluations = [r.event_log_entry.dagster_event.event_specific_data for r in records]  # type: ignore[union-attr]
    finally:
        instance.dispose()
    failed = [e for e in evaluations if not e.passed]
    names = sorted({f"{e.asset_key.to_user_string()}/{e.check_name} ({e.severity.value})" for e in failed})
    return len(evaluations), len(failed), names


def _timeline(ch: ClickHouseResource, dagster_home: Path, start: float, end: float) -> None:
    """Event-to-visible and ingestion by 10 s of event time, beside the runs that ran then (stderr)."""
    rows = ch.query(
        "SELECT toUnixTimestamp(toStartOfInterval(event_time, INTERVAL 10 SECOND)) AS t, count(), "
        "quantile(0.95)(dateDiff('millisecond', event_time, ingested_at)) / 1000.0 FROM events "
        "WHERE event_time >= fromUnixTimestamp64Milli({a:Int64}) AND event_time < fromUnixTimestamp64Milli({b:Int64}) "
        "GROUP BY t ORDER BY t",
        parameters={"a": int(start * 1000), "b": int(end * 1000)},
    ).result_rows
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    try:
        runs = [
            (r.start_time or 0.0, r.end_time or end, r.dagster_run.job_name)
            for r in instance.get_run_records(
                dg.RunsFilter(created_after=dt.datetime.fromtimestamp(start - 60, dt.UTC))
            )
        ]
    finally:
        instance.dispose()
    print("  timeline (10 s of event time): events, e2v P95, runs in progress", file=sys.stderr)
    for t, count, p95 in rows:
        during = sorted({name for s, e, name in runs if s < t + 10 and e > t and name != "kafka_ingestion"})
        print(f"    +{t - start:5.0f} s  {count:>7,}  {p95:6.2f} s  {' '.join(during)}", file=sys.stderr)


def _failed_runs(dagster_home: Path, since: float) -> list[str]:
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    try:
        records = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
        return [r.dagster_run.job_name for r in records if (r.create_timestamp.timestamp() >= since)]
    finally:
        instance.dispose()


def run(as_json: bool = False) -> dict[str, Any]:
    together_s = float(os.environ.get("NOVA_BENCH_PLATFORM_SECONDS", "300"))
    with tempfile.TemporaryDirectory(prefix="nova-bench-platform-", ignore_cleanup_errors=True) as tmp:
        home = Path(tmp)
        platform = Platform(home)
        try:
            return _run(platform, home, together_s, as_json)
        finally:
            platform.stop()


def _run(platform: Platform, home: Path, together_s: float, as_json: bool) -> dict[str, Any]:
    t_setup = time.monotonic()
    ch = platform.start()
    # a world to recommend from: 1M events over 3 days, follows; then one recompute and warm
    with ch.session() as client:
        client.command(GENERATE, parameters={"users": USERS, "posts": POSTS, "authors": AUTHORS, "n": EVENTS})
        client.command(FOLLOWS, parameters={"users": USERS, "authors": AUTHORS, "n": USERS * 10})
    first_feeds(platform.env)  # as `nova dev` starts: one recompute and warm, a run the UI shows
    cache = redis.Redis.from_url(platform.env["NOVA_REDIS_URL"])
    warmed = [k.decode()[6:-1] for k in cache.scan_iter(match="feed:{*}", count=5000) if b"trending" not in k]
    users_file = home / "warm-users.txt"
    users_file.write_text("\n".join(warmed) + "\n")
    platform.nova("serve", "--port", str(platform.serve_port))
    # one daemon for the whole run (a restart would kill the ingestion run under it); its
    # schedules stay off for the alone phases: ingestion through the sensor only
    platform.schedules("stop")
    platform.start_daemon()
    # a trickle keeps one ingestion run alive from here on (a run start costs seconds)
    platform.nova("generate", "events", "--rate", "20", "--duration", "3600")
    _wait_until(
        "the first ingestion run loading events",
        lambda: ch.query("SELECT count() FROM events WHERE ingested_at > now() - 5").result_rows[0][0] > 0,
        180,
    )
    print(f"  set-up {time.monotonic() - t_setup:.0f} s; {len(warmed):,} warmed users", file=sys.stderr)

    # --- alone -----------------------------------------------------------------------------------
    alone: dict[str, Any] = {}
    start = time.time()
    with CpuSampler() as cpu_events:
        platform.nova("generate", "events", "--rate", str(EVENT_RATE), "--duration", str(ALONE_S)).wait(ALONE_S + 60)
    time.sleep(5)
    alone["e2v"] = _e2v(ch, start + WARMUP_S, start + ALONE_S)
    start = time.time()
    with CpuSampler() as cpu_changes:
        platform.nova(
            "generate", "app", "--rate", str(CHANGE_RATE), "--duration", str(ALONE_S), "--users", "2000"
        ).wait(ALONE_S + 120)
    time.sleep(5)
    alone["cdc"] = _cdc_lag(ch, start + WARMUP_S, start + ALONE_S)
    with CpuSampler() as cpu_reads:
        alone["reads"] = _read_figures(_reads(platform, users_file, ALONE_S))
    alone["cpu"] = {"events": cpu_events.shares(), "changes": cpu_changes.shares(), "reads": cpu_reads.shares()}
    print(f"  alone: {orjson.dumps(alone).decode()}", file=sys.stderr)

    # --- together ---------------------------------------------------------------------------------
    # schedules on: checks every minute, a recompute and a cache warm during the window
    platform.schedules("start")
    start = time.time()
    events = platform.nova("generate", "events", "--rate", str(EVENT_RATE), "--duration", str(together_s))
    changes = platform.nova(
        "generate", "app", "--rate", str(CHANGE_RATE), "--duration", str(together_s), "--users", "2000"
    )
    with CpuSampler() as cpu:
        reader = _reads(platform, users_file, together_s)
        reads = _read_figures(reader)
        events.wait(120)
        changes.wait(120)
    end = start + together_s
    time.sleep(10)
    together = {
        "e2v": _e2v(ch, start + WARMUP_S, end),
        "cdc": _cdc_lag(ch, start + WARMUP_S, end),
        "reads": reads,
        "cpu": cpu.shares(),
    }
    dagster_home = Path(platform.env["DAGSTER_HOME"])
    evaluations, failed, failed_names = _failed_checks(dagster_home, start)
    failed_runs = _failed_runs(dagster_home, start)
    _timeline(ch, dagster_home, start, end)
    return _report(alone, together, evaluations, failed, failed_names, failed_runs, together_s, as_json)


def _keys(name: str, q: dict[str, float], unit: str, which: tuple[str, ...] = ("p50", "p95", "p99")) -> dict:
    """JSON keys such as e2v_p95_s or hit_p99_ms for the quantiles of one figure."""
    return {f"{name}_{k}_{unit}": round(q[k], 3 if unit == "s" else 2) for k in which}


def _trio(q: dict[str, float], unit: str) -> str:
    digits = 2 if unit == "s" else 1
    return f"{q['p50']:.{digits}f}/{q['p95']:.{digits}f}/{q['p99']:.{digits}f} {unit}"


def _vs(together: dict[str, float], alone: dict[str, float], unit: str) -> str:
    """The together P95 as a ratio of the alone P95 (goal: within 1.5x)."""
    ratio = together["p95"] / alone["p95"] if alone["p95"] and alone["p95"] == alone["p95"] else float("nan")
    return f"P95 {ratio:.2f}x alone ({alone['p95']:.2f} {unit})"


def _report(
    alone: dict[str, Any],
    together: dict[str, Any],
    evaluations: int,
    failed: int,
    failed_names: list[str],
    failed_runs: list[str],
    seconds: float,
    as_json: bool,
) -> dict[str, Any]:
    e, ea = together["e2v"], alone["e2v"]
    c, ca = together["cdc"], alone["cdc"]
    h, ha = together["reads"]["hit"], alone["reads"]["hit"]
    m, ma = together["reads"]["miss"], alone["reads"]["miss"]
    errors = together["reads"]["errors"] + len(failed_runs)
    timeouts = together["reads"]["timeouts"]
    summary = {
        "seconds": seconds,
        "event_rate": EVENT_RATE,
        "change_rate": CHANGE_RATE,
        "read_rate": READ_RATE,
        "events_measured": e["n"],
        "changes_measured": c["n"],
        "reads": together["reads"]["sent"],
        **_keys("e2v", e, "s", ("p50", "p95", "p99", "max")),
        **_keys("cdc_lag", c, "s"),
        **_keys("hit", h, "ms"),
        **_keys("miss", m, "ms"),
        "errors": errors,
        "timeouts": timeouts,
        "failed_runs": len(failed_runs),
        "check_evaluations": evaluations,
        "failed_checks": failed,
        "failed_check_names": failed_names,
        "cpu_cores_by_part": together["cpu"],
        "e2v_p95_alone_s": round(ea["p95"], 3),
        "e2v_p99_alone_s": round(ea["p99"], 3),
        "cdc_lag_p95_alone_s": round(ca["p95"], 3),
        "hit_p95_alone_ms": round(ha["p95"], 2),
        "miss_p95_alone_ms": round(ma["p95"], 2),
    }
    report(
        f"nova bench platform: everything at once for {seconds:g} s — events {EVENT_RATE:,}/s, "
        f"app changes {CHANGE_RATE:,}/s via Debezium, reads {READ_RATE}/s (90% warmed), schedules on",
        [
            ("e2v P50/P95/P99", _trio(e, "s"), f"goal P95<=1, P99<=2; {_vs(e, ea, 's')}"),
            ("e2v max", f"{e['max']:.2f} s", f"alone {ea['max']:.2f} s; {e['n']:,} events measured"),
            ("CDC lag P50/P95/P99", _trio(c, "s"), f"goal P95<=2; {_vs(c, ca, 's')}; {c['n']:,} changes"),
            ("read hit P50/P95/P99", _trio(h, "ms"), f"goal P95<=10; {_vs(h, ha, 'ms')}"),
            ("read miss P50/P95/P99", _trio(m, "ms"), _vs(m, ma, "ms")),
            ("errors / time-outs", f"{errors} / {timeouts}", f"goal 0 / 0; failed runs {failed_runs or 'none'}"),
            ("failed checks", f"{failed} of {evaluations}", ", ".join(failed_names) or "goal 0"),
            *[(f"CPU {part}", f"{cores:.2f} cores", "") for part, cores in together["cpu"].items()],
        ],
        summary,
        as_json,
    )  # fmt: skip
    return summary
