"""The supervisor restarts what dies, at once the first time, with growing backoff while it keeps dying."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from nova_assets.stack.supervisor import Child, Supervisor

pytestmark = pytest.mark.unit


def _spawner(code: str) -> object:
    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", code], start_new_session=True)

    return spawn


def _until(check: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_killed_process_is_restarted_within_seconds_with_a_log_line() -> None:
    lines: list[str] = []
    child = Child("worker", _spawner("import time; time.sleep(120)"))  # type: ignore[arg-type]
    supervisor = Supervisor([child.unit()], lines.append, poll_s=0.1).start()
    try:
        first = child.proc.pid
        os.kill(first, signal.SIGKILL)
        killed = time.monotonic()
        _until(lambda: supervisor.restarts()["worker"] == 1, 10)
        assert time.monotonic() - killed < 2
        assert child.alive() and child.proc.pid != first
        assert any("worker is down" in line and "exit code -9" in line for line in lines), lines
        assert any("worker restarted" in line for line in lines), lines
    finally:
        supervisor.stop()
        child.stop(grace_s=1)
    assert not child.alive()


def test_a_process_that_keeps_dying_backs_off() -> None:
    lines: list[str] = []
    child = Child("crasher", _spawner("raise SystemExit(3)"))  # type: ignore[arg-type]
    supervisor = Supervisor([child.unit()], lines.append, poll_s=0.05, max_backoff_s=4).start()
    try:
        _until(lambda: any("restarting in 4 s" in line for line in lines), 20)
    finally:
        supervisor.stop()
    waits = [line.split("restarting in ")[1].split(" s")[0] for line in lines if "restarting in" in line]
    assert waits[:2] == ["2", "4"], lines  # the first restart is immediate, then 2, 4 (capped) s
    assert supervisor.backoff_s(10) == 4
