"""Quoting and redaction of identifiers and URLs (resources, DDL and error messages share them)."""

from __future__ import annotations

from pathlib import Path

from nova_assets import settings
from nova_assets.errors import ConfigError, redact_secrets

CHDB_SCHEME = "chdb://"


def quote_identifier(name: str) -> str:
    """Backtick-quote a ClickHouse identifier (names cannot be bound as parameters)."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def redact(url: str) -> str:
    """The URL with its password, `?password=` and tokens masked, safe for logs and error messages."""
    return redact_secrets(url)


def chdb_path(url: str) -> Path | None:
    """The data directory of a `chdb:///dir` ClickHouse URL, None for a server URL."""
    if not url.startswith(CHDB_SCHEME):
        return None
    path = url[len(CHDB_SCHEME) :]
    if not path.startswith("/"):
        raise ConfigError(settings.CLICKHOUSE_URL, url, "an embedded URL needs an absolute path", "use chdb:///abs/dir")
    return Path(path)
