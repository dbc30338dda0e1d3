"""Small process helpers for the stack: pid files, liveness, ports, log tails."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path


def read_pid(pid_file: Path) -> int | None:
    """The pid in a pid file, or None when the file is missing or garbage."""
    try:
        return int(pid_file.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def alive(pid: int | None, needle: str | None = None) -> bool:
    """Whether `pid` runs (and, when given, its command line contains `needle`: guards pid reuse)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":  # zombie: exited, not yet reaped
        return False
    return needle is None or needle in cmdline


def terminate(pid: int, timeout_s: float = 10.0, needle: str | None = None) -> None:
    """SIGTERM, wait, then SIGKILL; returns once the process is gone."""
    if not alive(pid, needle):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid, needle):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    while alive(pid, needle):
        time.sleep(0.05)


def stop_group(proc: subprocess.Popen[bytes], grace_s: float, first: signal.Signals = signal.SIGINT) -> None:
    """Stop a process group: `first` (SIGINT: graceful), SIGTERM after `grace_s`, SIGKILL 2 s later;
    leaves nothing. `proc` must lead its group (started with `start_new_session=True`)."""
    steps = [(first, grace_s)] + [(sig, 2.0) for sig in (signal.SIGTERM, signal.SIGKILL) if sig != first]
    for sig, wait_s in steps:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            continue
        break
    # the leader is gone; its children (webserver, daemon, runs) may not be
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something already listens on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel considers free right now (for tests and benchmarks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _ephemeral_low() -> int:
    """Where the kernel's range of ports for outgoing connections starts (32768 by default)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port_block(size: int, host: str = "127.0.0.1", attempts: int = 50) -> int:
    """The first of `size` consecutive ports that are all free right now (SeaweedFS takes ten).

    Drawn below the kernel's ephemeral range: SeaweedFS binds its ports over seconds, and a port
    the kernel hands out for outgoing connections could be taken by any client meanwhile (a CI run
    lost its filer's gRPC port that way)."""
    low, high = 20_000, _ephemeral_low() - size
    for _ in range(attempts):
        base = random.randrange(low, high) if high > low else free_port(host)
        if base + size > 65535:
            continue
        try:
            socks = []
            for port in range(base, base + size):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(sock)
                sock.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise OSError(f"no {size} consecutive free ports on {host}")


def tail(path: Path, lines: int = 20) -> str:
    """Last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.rstrip().splitlines()[-lines:]) or f"(empty log at {path})"


AUTOGROUP = Path("/proc/self/autogroup")


def at_nice(nice: int) -> Callable[[], None]:
    """A `preexec_fn` that starts a child process at `nice` (0: unchanged); what it starts inherits it.

    Where the kernel groups processes by session (`kernel.sched_autogroup_enabled`, on in most
    desktop distributions and on these machines), a child started in a new session has a
    scheduling group of its own, and groups share the CPU by the group's nice, not their
    processes': `os.nice` alone then orders the child only against its own group, and Dagster at
    nice 5 competed with the read path as an equal. A session leader therefore sets its group's
    nice as well (only a session leader: another's group is its parent's too).
    """

    def lower() -> None:
        if nice <= 0:
            return
        os.nice(nice)
        if os.getsid(0) != os.getpid():
            return
        for _ in range(50):  # without CAP_SYS_ADMIN the kernel takes one change per 100 ms
            try:
                AUTOGROUP.write_text(str(nice))
                return
            except BlockingIOError:
                time.sleep(0.01)
            except OSError:  # no autogroup support in this kernel: os.nice is what there is
                return

    return lower


def group_nice(pid: int) -> int | None:
    """The nice of a process's autogroup (None where the kernel has none)."""
    try:
        text = Path(f"/proc/{pid}/autogroup").read_text()
    except OSError:
        return None
    return int(text.rsplit("nice", 1)[1]) if "nice" in text else None


@contextlib.contextmanager
def thread_priority(nice: int) -> Iterator[None]:
    """Run the calling thread, and the threads it starts, at `nice` (never higher than it is).

    Linux keeps a nice value per thread, so a batch step in a Dagster run (or a test) lowers only
    itself, and gives the value back afterwards where it may (raising a priority again needs
    CAP_SYS_NICE or RLIMIT_NICE; without them the thread stays lower, which only affects batch work).
    """
    tid = threading.get_native_id()
    before = os.getpriority(os.PRIO_PROCESS, tid)
    if nice <= before:
        yield
        return
    os.setpriority(os.PRIO_PROCESS, tid, min(19, nice))
    try:
        yield
    finally:
        with contextlib.suppress(PermissionError):
            os.setpriority(os.PRIO_PROCESS, tid, before)
