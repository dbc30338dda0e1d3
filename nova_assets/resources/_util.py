"""Helpers shared by the resources."""

from __future__ import annotations

from nova_assets.errors import redact_secrets


def quote_identifier(name: str) -> str:
    """Backtick-quote a ClickHouse identifier (names cannot be bound as parameters)."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def redact(url: str) -> str:
    """The URL with its password, `?password=` and tokens masked, safe for logs and error messages."""
    return redact_secrets(url)
