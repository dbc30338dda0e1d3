"""Postgres, the source of CDC (users, posts, likes, comments, follows), through psycopg 3."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from nova_assets import settings
from nova_assets.core.identifiers import redact
from nova_assets.errors import ConfigError, ServiceUnavailable

if TYPE_CHECKING:
    import psycopg


class PostgresResource(dg.ConfigurableResource):
    """The Nova app database; connections are short-lived (CDC reads from a replication slot)."""

    dsn: str = Field(description="postgresql://user[:password]@host:port/db")
    connect_timeout_s: int = Field(default=5, description="Seconds to wait for a connection.")

    @contextlib.contextmanager
    def connect(self, autocommit: bool = False) -> Iterator[psycopg.Connection]:
        if not self.dsn.startswith(("postgresql://", "postgres://")):
            raise ConfigError(settings.POSTGRES_DSN, redact(self.dsn), "is not a postgresql:// URL")
        import psycopg  # lazy: only processes that touch Postgres pay its import (~0.15 s)

        try:
            conn = psycopg.connect(self.dsn, connect_timeout=self.connect_timeout_s, autocommit=autocommit)
        except psycopg.OperationalError as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ServiceUnavailable(
                "Postgres", redact(self.dsn), settings.POSTGRES_DSN, detail, self.connect_timeout_s
            ) from None
        with conn:
            yield conn

    def ping(self) -> str:
        with self.connect() as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return str(row[0]) if row else ""
