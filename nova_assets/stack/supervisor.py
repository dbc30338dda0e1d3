"""Keep the local platform alive: restart a dead service or process, with backoff if it keeps dying.

`nova dev` hands the supervisor one `Unit` per local service (ClickHouse, Kafka, Redis, Postgres,
Debezium) and per process of its own (Dagster, `nova serve`, the traffic generators). Every
`poll_s` it asks each unit whether it is alive (a /proc read or a `poll()`, no request); a dead
one is restarted at once, then after 2, 4, ... up to `max_backoff_s` seconds while it keeps dying
within `stable_s` of its start. Each death and restart is one line in the log. Restarts run on a
thread of their own, so a slow one (the Debezium JVM) never delays noticing another death.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nova_assets.core.process import stop_group
from nova_assets.stack.manager import Stack


@dataclass
class Unit:
    """Something the supervisor keeps running: how to tell it is alive and how to bring it back."""

    name: str
    alive: Callable[[], bool]
    restart: Callable[[], str]  # starts it again (blocking until it answers); returns e.g. "pid 123"
    death: Callable[[], str] = lambda: ""  # what is known of its end, e.g. "exit code -9"


@dataclass
class _State:
    started: float
    failures: int = 0  # consecutive deaths within `stable_s` of a start
    due: float | None = None  # when the next restart attempt may begin
    restarting: bool = False
    restarts: int = 0


@dataclass
class Supervisor:
    units: list[Unit]
    log: Callable[[str], None]
    poll_s: float = 1.0
    stable_s: float = 60.0
    max_backoff_s: float = 60.0
    _states: dict[str, _State] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        now = time.monotonic()
        self._states = {u.name: _State(started=now) for u in self.units}

    def add(self, unit: Unit) -> None:
        """Watch one more unit (a process started after the supervisor)."""
        with self._lock:
            self._states[unit.name] = _State(started=time.monotonic())
            self.units.append(unit)
        self.log(f"supervisor: watching {unit.name}")

    def restarts(self) -> dict[str, int]:
        """Restarts so far per unit (for reports and tests)."""
        with self._lock:
            return {name: s.restarts for name, s in self._states.items()}

    def backoff_s(self, failures: int) -> float:
        """0 for the first death, then 2, 4, 8, ... capped at max_backoff_s."""
        return 0.0 if failures <= 1 else min(self.max_backoff_s, float(2 ** (failures - 1)))

    def tick(self) -> None:
        """Look at every unit once; start the restarts that are due."""
        now = time.monotonic()
        with self._lock:
            units = list(self.units)
        for unit in units:
            with self._lock:
                state = self._states[unit.name]
                if state.restarting or self._stop.is_set():
                    continue
            if unit.alive():
                continue
            with self._lock:
                if state.due is None:  # newly found dead
                    state.failures = state.failures + 1 if now - state.started < self.stable_s else 1
                    state.due = now + self.backoff_s(state.failures)
                    wait = state.due - now
                    after = f"; restarting in {wait:.0f} s (died {state.failures} times in a row)" if wait else ""
                    self.log(f"supervisor: {unit.name} is down ({unit.death() or 'gone'}){after or '; restarting'}")
                if now < state.due:
                    continue
                state.restarting = True
            threading.Thread(target=self._restart, args=(unit, state), name=f"restart-{unit.name}", daemon=True).start()

    def _restart(self, unit: Unit, state: _State) -> None:
        began = time.monotonic()
        try:
            detail = unit.restart()
        except Exception as exc:  # a failed attempt is a death: backoff grows, and it is tried again
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            with self._lock:
                state.failures += 1
                state.due = time.monotonic() + max(1.0, self.backoff_s(state.failures))
                state.started = time.monotonic()
                state.restarting = False
            wait = state.due - time.monotonic()
            self.log(f"supervisor: restarting {unit.name} failed ({first}); next attempt in {wait:.0f} s")
            return
        with self._lock:
            state.started = time.monotonic()
            state.due = None
            state.restarting = False
            state.restarts += 1
        self.log(f"supervisor: {unit.name} restarted in {time.monotonic() - began:.1f} s ({detail})")

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.tick()
            except Exception as exc:  # the supervisor itself must not die of one unit's probe
                self.log(f"supervisor: checking the units failed ({exc}); trying again")

    def start(self) -> Supervisor:
        self._thread = threading.Thread(target=self._loop, name="supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """No more restarts (call before stopping what it watches)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.poll_s + 1)


class Child:
    """A process of `nova dev` (Dagster, `nova serve`, a generator) that the supervisor can restart.

    It runs in a process group of its own, so stopping it also stops what it started (Dagster's
    webserver, daemon, code server and runs).
    """

    def __init__(self, name: str, spawn: Callable[[], subprocess.Popen[bytes]]) -> None:
        self.name = name
        self.spawn = spawn
        self.proc = spawn()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def death(self) -> str:
        code = self.proc.poll()
        return f"pid {self.proc.pid}, exit code {code}" if code is not None else f"pid {self.proc.pid}"

    def restart(self) -> str:
        stop_group(self.proc, grace_s=2.0)  # whatever it left behind (a webserver holding the port)
        self.proc = self.spawn()
        return f"pid {self.proc.pid}"

    def unit(self) -> Unit:
        return Unit(self.name, self.alive, self.restart, self.death)

    def stop(self, grace_s: float = 4.0) -> None:
        stop_group(self.proc, grace_s)


def service_unit(stack: Stack, name: str) -> Unit:
    """A stack service: alive while its pid file names a live process; restarted by `Stack.up`."""
    svc = stack.services[name]
    last = {"pid": svc.pid()}

    def alive() -> bool:
        pid = svc.pid()
        if pid is not None:
            last["pid"] = pid
            if svc.proc is not None:
                svc.proc.poll()  # reap an exited child of ours, so it reads as dead, not a zombie
        return pid is not None

    def death() -> str:
        return f"pid {last['pid']} gone" if last["pid"] else "not running"

    def restart() -> str:
        stack.up([name], echo=lambda _line: None)
        return f"pid {svc.pid()} on {svc.address}"

    return Unit(name, alive, restart, death)
