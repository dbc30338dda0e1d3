from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from nova_assets.core.process import free_port
from nova_assets.stack import Stack, StackError

pytestmark = pytest.mark.integration  # starts the project's services itself


def _nova(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "NOVA_HOME": str(home), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "nova_assets.cli", *args], capture_output=True, text=True, env=full_env, timeout=120
    )


def test_up_twice_status_down_up(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("clickhouse", "kafka", "redis", "postgres")}
    env = {f"NOVA_{name.upper()}_PORT": str(port) for name, port in ports.items()}
    home = tmp_path / "home"
    try:
        first = _nova(home, "stack", "up", env=env)
        assert first.returncode == 0, first.stderr
        assert "started" in first.stdout
        second = _nova(home, "stack", "up", env=env)
        assert second.returncode == 0, second.stderr
        assert second.stdout.count("already running") == 4

        status = _nova(home, "stack", "status")
        assert status.returncode == 0, status.stdout
        assert status.stdout.count("healthy") == 4

        # every service listens on loopback only
        for port in ports.values():
            with socket.socket() as sock:
                sock.settimeout(0.5)
                assert sock.connect_ex(("127.0.0.1", port)) == 0

        exported = _nova(home, "stack", "env")
        script = (
            f"{exported.stdout}\necho $NOVA_KAFKA_BOOTSTRAP $NOVA_REDIS_URL $NOVA_POSTGRES_DSN $NOVA_CLICKHOUSE_URL"
        )
        shown = subprocess.run(["bash", "-c", script], capture_output=True, text=True).stdout.split()
        assert shown == [
            f"127.0.0.1:{ports['kafka']}",
            f"redis://127.0.0.1:{ports['redis']}/0",
            f"postgresql://postgres@127.0.0.1:{ports['postgres']}/nova",
            f"http://default:{(home / 'clickhouse' / 'password').read_text().strip()}@127.0.0.1:{ports['clickhouse']}",
        ]
        assert (home / "clickhouse" / "password").stat().st_mode & 0o077 == 0  # the secret is the owner's only

        only = _nova(home, "stack", "down", "--only", "redis")
        assert only.returncode == 0 and "redis: stopped" in only.stdout
        partial = _nova(home, "stack", "status")
        assert partial.returncode == 1
        assert "redis      down" in partial.stdout
        back = _nova(home, "stack", "up")
        assert "redis: started" in back.stdout and back.stdout.count("already running") == 3

        down = _nova(home, "stack", "down")
        assert down.returncode == 0
        assert _nova(home, "stack", "status").returncode == 1
        again = _nova(home, "stack", "up")
        assert again.returncode == 0, again.stderr
        assert again.stdout.count("started") == 4
    finally:
        _nova(home, "stack", "down")


def test_blocked_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        stack = Stack(home=tmp_path, ports={"kafka": free_port(), "redis": port, "postgres": free_port()})
        with pytest.raises(StackError) as info:
            stack.up(only=["redis"], echo=lambda _m: None)
    message = str(info.value)
    assert f"port {port}" in message and "NOVA_REDIS_PORT" in message and "already in use" in message


def test_bad_port_setting_names_the_variable(tmp_path: Path) -> None:
    result = _nova(tmp_path, "stack", "up", env={"NOVA_KAFKA_PORT": "ninety"})
    assert result.returncode != 0
    assert "NOVA_KAFKA_PORT='ninety'" in result.stderr


def test_unknown_service(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="unknown service 'kafak'"):
        Stack(home=tmp_path).up(only=["kafak"], echo=lambda _m: None)


def test_failed_start_reports_log_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nova_assets.stack import manager

    monkeypatch.setattr(manager.RedisService, "binary", staticmethod(lambda: "/bin/false"))
    stack = Stack(home=tmp_path, ports={"kafka": free_port(), "redis": free_port(), "postgres": free_port()})
    with pytest.raises(StackError, match=r"redis exited with code 1 during start-up"):
        stack.up(only=["redis"], echo=lambda _m: None)
