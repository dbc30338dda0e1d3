"""The processes of one NOVA_HOME: what each is, its memory and CPU, and the home's size on disk."""

from __future__ import annotations

import os
import re
from pathlib import Path

# what a process is, from its command line (first match wins)
LABELS = (
    ("clickhouse_server", "clickhouse server"), ("tansu", "kafka (tansu)"), ("valkey", "redis (valkey)"),
    ("redis-server", "redis (valkey)"), ("postgres", "postgres"), ("nova_assets.cli cdc", "cdc (debezium jvm)"),
    ("dagster._daemon", "dagster daemon"), ("dagster-daemon", "dagster daemon"),
    ("dagster_webserver", "dagster webserver"), ("dagster-webserver", "dagster webserver"),
    ("api grpc", "dagster code server"), ("code-server", "dagster code server"),
    ("api execute_run", "dagster runs"), ("dagster dev", "dagster dev"), ("cli serve", "nova serve"),
    ("generate events", "traffic: events"), ("generate app", "traffic: app"), ("generate reads", "traffic: reads"),
    ("nova_assets.cli dev", "nova dev"),
)  # fmt: skip


def _processes(home: Path) -> list[tuple[int, str]]:
    """(pid, command line) of every process whose environment names this NOVA_HOME."""
    found = []
    needle = f"NOVA_HOME={home}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in environ.split(b"\0") or str(home) in cmdline:
            found.append((int(entry.name), cmdline))
    return found


def _label(cmdline: str) -> str:
    return next((label for needle, label in LABELS if needle in cmdline), "other")


def rss_by_part(home: Path) -> dict[str, float]:
    """Resident memory in MB per kind of process."""
    out: dict[str, float] = {}
    for pid, cmdline in _processes(home):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        if match:
            label = _label(cmdline)
            out[label] = out.get(label, 0.0) + int(match.group(1)) / 1024
    return {k: round(v, 1) for k, v in sorted(out.items())}


def cpu_seconds(home: Path) -> dict[int, tuple[str, float]]:
    """pid -> (kind of process, CPU seconds so far) for every process of this NOVA_HOME."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid, cmdline in _processes(home):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (_label(cmdline), (int(fields[11]) + int(fields[12])) / tick)
    return out


def cores_by_part(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], seconds: float) -> dict:
    """CPU in cores per kind of process between two `cpu_seconds` snapshots."""
    parts: dict[str, float] = {}
    for pid, (label, cpu) in after.items():
        parts[label] = parts.get(label, 0.0) + (cpu - before.get(pid, (label, 0.0))[1]) / seconds
    return {k: round(v, 3) for k, v in sorted(parts.items(), key=lambda kv: -kv[1]) if v > 0.0005}


def home_mb(home: Path) -> float:
    """Size of NOVA_HOME in MB (files that vanish while it is walked, as ClickHouse's temporary
    parts do, are skipped)."""
    total = 0
    for root, _dirs, files in os.walk(home, onerror=lambda _exc: None):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return round(total / 2**20, 1)
