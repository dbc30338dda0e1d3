"""CPU of one process's threads, grouped by what they do: what `nova cdc`'s per-change cost is made of.

The JVM names its threads (the kernel keeps the first 15 characters), so the Debezium process's
CPU splits into the JIT compilers, the garbage collector, Debezium's replication reader (decodes
pgoutput, builds the change events), the engine's worker (transforms, JSON conversion and the
Python handler it calls), JPype's reference queue (frees the Java objects Python touched: part
of the Python hop), librdkafka's threads and Python's own (which keep the process's name).
"""

from __future__ import annotations

import os
from pathlib import Path

GROUPS = (
    ("C1 CompilerThre", "jit compilers"),
    ("C2 CompilerThre", "jit compilers"),
    ("GC Thread", "garbage collector"),
    ("G1 ", "garbage collector"),
    ("debezium-", "debezium reader"),
    ("pool-", "engine worker (transforms, JSON, handler)"),
    ("Python Referenc", "jpype references"),
    ("rdk:", "kafka client"),
    ("python", "python threads"),
)


def group_of(name: str) -> str:
    """The group of a thread by its kernel name (`comm`); unnamed JVM threads are `jvm other`."""
    return next((group for prefix, group in GROUPS if name.startswith(prefix)), "jvm other")


def _task_seconds(task: Path, ticks: int) -> float:
    """One thread's CPU seconds: the scheduler's nanosecond count where the kernel keeps one.

    `stat`'s utime/stime are sampled at the timer tick (10 ms): a thread that runs 2 ms in a
    window reads 0 or 10 ms, too coarse for a thread's share of a small load (a tiny smoke run
    read Debezium's reader as 0). `schedstat`'s first field is the exact time on a CPU.
    """
    try:
        return int((task / "schedstat").read_text().split()[0]) / 1e9
    except (FileNotFoundError, IndexError, ValueError):  # a kernel without CONFIG_SCHED_INFO
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / ticks


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of the live threads of `pid`, summed by group."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:  # the process has ended: nothing to count
        return out
    for task in tasks:
        try:
            name = (task / "comm").read_text().strip()
            seconds = _task_seconds(task, ticks)
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended between the listing and the read
        group = group_of(name)
        out[group] = out.get(group, 0.0) + seconds
    return out


def per_unit_us(before: dict[str, float], after: dict[str, float], units: int) -> dict[str, float]:
    """Each group's CPU over a window in µs per unit of work, largest first (threads that ended
    inside the window are not counted: the JVM's and JPype's threads live as long as the process)."""
    if units <= 0:
        return {}
    spent = {group: after[group] - before.get(group, 0.0) for group in after}
    return {g: round(s * 1e6 / units, 1) for g, s in sorted(spent.items(), key=lambda kv: -kv[1]) if s > 0}
