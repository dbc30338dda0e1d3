"""What the local ClickHouse server keeps beside its chDB directory: its password and who serves it.

Kept apart from the server module so the stack and the resources read them without importing
chDB or the HTTP server.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import orjson

from nova_assets.core.process import alive

USER = "default"
PASSWORD_FILE = "password"
SERVER_FILE = "server.json"
SERVER_NEEDLE = "clickhouse_server"


def secret_file(path: Path) -> str:
    """A secret kept in `path`, generated (mode 0600) the first time it is asked for."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            return path.read_text().strip()
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip()


def password_for(directory: Path) -> str:
    """The server's password, generated (mode 0600) on first start."""
    return secret_file(directory / PASSWORD_FILE)


def serving(directory: Path) -> dict[str, Any] | None:
    """What a running server of this directory wrote about itself (url without password, pid), or None."""
    try:
        info = orjson.loads((directory / SERVER_FILE).read_bytes())
    except (FileNotFoundError, NotADirectoryError, orjson.JSONDecodeError):
        return None
    return info if alive(int(info.get("pid") or 0), SERVER_NEEDLE) else None
