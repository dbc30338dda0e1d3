"""Helpers shared by the resources."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def quote_identifier(name: str) -> str:
    """Backtick-quote a ClickHouse identifier (names cannot be bound as parameters)."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def redact(url: str) -> str:
    """The URL with its password replaced, safe for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
