"""CPU per part of the platform, sampled from /proc while a benchmark runs."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from pathlib import Path

from bench.parts.threads import per_unit_us, thread_cpu

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
    ("code-server", "dagster code servers"),
    ("execute_run", "dagster runs"),
    ("multiprocessing", "dagster runs"),
    ("dagster", "dagster runs"),
    ("# nova bench read load", "read load (client)"),
)


class CpuSampler:
    """CPU seconds per part of the platform over a window, from /proc every second; the CDC
    process's also by thread (`bench.parts.threads`): where a change's cost goes."""

    def __init__(self, threads_of: str = "debezium (nova cdc)") -> None:
        self.last: dict[int, float] = {}
        self.parts: dict[str, float] = {}
        self.threads_of = threads_of
        self.threads_before: dict[str, float] = {}
        self.threads_after: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.started = 0.0
        #: (from, to, CPU seconds by part) per sample, epoch seconds: what ran when (`bench.parts.batch`)
        self.part_timeline: list[tuple[float, float, dict[str, float]]] = []
        self.sampled_at = 0.0

    @staticmethod
    def _read() -> dict[int, tuple[str, float]]:
        ticks = os.sysconf("SC_CLK_TCK")
        found: dict[int, tuple[str, str, float]] = {}
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
                found[int(entry.name)] = (part, cmd, (int(fields[11]) + int(fields[12])) / ticks)
        writers = [pid for pid, (part, _cmd, _s) in found.items() if part == "app generator"]
        ports = client_ports(writers) if writers else set()
        return {pid: (backend_part(part, cmd, ports), seconds) for pid, (part, cmd, seconds) in found.items()}

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            self._sample()

    def _sample(self) -> dict[int, tuple[str, float]]:
        read, now = self._read(), time.time()
        by_part: dict[str, float] = {}
        for pid, (part, seconds) in read.items():
            spent = seconds - self.last.get(pid, 0.0)
            self.parts[part] = self.parts.get(part, 0.0) + spent
            by_part[part] = by_part.get(part, 0.0) + spent
            self.last[pid] = seconds
        self.part_timeline.append((self.sampled_at, now, by_part))
        self.sampled_at = now
        return read

    def _threads(self, read: dict[int, tuple[str, float]]) -> dict[str, float]:
        """The `threads_of` processes' CPU by thread group, from one /proc reading's processes."""
        out: dict[str, float] = {}
        for pid, (part, _seconds) in read.items():
            if part == self.threads_of:
                for group, seconds in thread_cpu(pid).items():
                    out[group] = out.get(group, 0.0) + seconds
        return out

    @property
    def timeline(self) -> list[tuple[float, float, float]]:
        """(from, to, platform CPU seconds) per sample: the parts' without the load generators'."""
        return [
            (t0, t1, sum(v for k, v in parts.items() if k not in LOAD_PARTS)) for t0, t1, parts in self.part_timeline
        ]

    def __enter__(self) -> CpuSampler:
        read = self._read()
        self.last = {pid: seconds for pid, (_part, seconds) in read.items()}
        self.sampled_at = time.time()
        self.threads_before = self._threads(read)
        self.started = time.monotonic()
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.threads_after = self._threads(self._sample())
        self.elapsed = time.monotonic() - self.started

    def shares(self) -> dict[str, float]:
        """Each part's CPU as a share of one core, over the window (2 cores = 2.0 in all)."""
        return {k: round(v / self.elapsed, 3) for k, v in sorted(self.parts.items(), key=lambda kv: -kv[1])}

    def thread_shares(self) -> dict[str, float]:
        """The `threads_of` process's CPU by thread group, as a share of one core over the window."""
        spent = per_unit_us(self.threads_before, self.threads_after, 1)  # µs per the window
        # six places: a thread's share of a small load is a few ms per second (three read it as 0)
        return {group: round(us / 1e6 / self.elapsed, 6) for group, us in spent.items()}


#: the Postgres backends serving the app generator's connections: the app's own database load,
#: which the changes stand in for (as `nova bench cdc` reports them apart)
WRITER_BACKENDS = "postgres (app writers' backends)"
#: the load generators: measured, but not the platform's own cost
LOAD_PARTS = frozenset({"event generator", "app generator", "read load (client)", WRITER_BACKENDS})
BACKEND_PORT = re.compile(r"^postgres: .*\((\d+)\)")


def client_ports(pids: list[int]) -> set[int]:
    """The local TCP ports of the sockets these processes hold (their connections' client ends)."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    link = os.readlink(fd)
                    if link.startswith("socket:["):
                        inodes.add(link[8:-1])
        except OSError:
            continue
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if len(cols) > 9 and cols[9] in inodes:
                    ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def backend_part(part: str, cmd: str, writer_ports: set[int]) -> str:
    """A Postgres backend whose client is an app writer (its title names the client's port) is the
    load's; every other Postgres process (WAL writer, walsender, the connector's) the platform's."""
    if part != "postgres" or not writer_ports:
        return part
    found = BACKEND_PORT.match(cmd)
    return WRITER_BACKENDS if found and int(found.group(1)) in writer_ports else part


def platform_cores(shares: dict[str, float]) -> float:
    """The platform's own CPU in cores (every part but the load generators)."""
    return round(sum(cores for part, cores in shares.items() if part not in LOAD_PARTS), 3)


def cpu_us_per_unit(shares: dict[str, float], idle: dict[str, float], units: float, elapsed_s: float) -> float:
    """Platform CPU per unit of work, in µs, above what the idle platform spends: `units` done in a
    window of `elapsed_s` (the load, and the merges its inserts left behind)."""
    if units <= 0:
        return float("nan")
    return round(max(0.0, platform_cores(shares) - platform_cores(idle)) * elapsed_s * 1e6 / units, 1)
