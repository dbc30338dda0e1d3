"""What the core needs of each external system, as structural types.

The Dagster resources in `nova_assets.resources` satisfy these (the type checker verifies it where
they are passed in); the core names only these, so it depends on no Dagster class and a caller
outside Dagster may hand it anything with the same shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.query import QueryResult
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

if TYPE_CHECKING:  # psycopg loads where Postgres is used (~0.15 s of every Dagster process's start)
    import psycopg

#: a Redis client: one node, or a cluster (RedisResource.client() gives either)
RedisClient = redis.Redis | redis.cluster.RedisCluster
#: the same for one event loop (RedisResource.async_client() gives either)
AsyncRedisClient = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster


class ClickHouse(Protocol):
    """A ClickHouse database: a clickhouse-connect client for it, and one-call shortcuts."""

    @property
    def url(self) -> str: ...
    @property
    def database(self) -> str: ...
    @property
    def cluster(self) -> str: ...
    def session(self) -> AbstractContextManager[Client]: ...
    def ddl_session(self) -> AbstractContextManager[Client]: ...
    def query(
        self, sql: str, parameters: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
    ) -> QueryResult: ...
    def insert(
        self,
        table: str,
        rows: Sequence[Sequence[Any]],
        column_names: Sequence[str],
        settings: dict[str, Any] | None = None,
    ) -> int: ...


class Kafka(Protocol):
    """Kafka brokers: configured clients and the metadata timeout."""

    @property
    def bootstrap_servers(self) -> str: ...
    @property
    def timeout_s(self) -> float: ...
    def consumer(self, **overrides: Any) -> Consumer: ...
    def producer(self, **overrides: Any) -> Producer: ...
    def admin(self) -> AdminClient: ...
    def client_settings(self) -> dict[str, Any]: ...


class Postgres(Protocol):
    """The app's Postgres database."""

    @property
    def dsn(self) -> str: ...
    def connect(self, autocommit: bool = False) -> AbstractContextManager[psycopg.Connection]: ...
