"""Redis (or valkey) through redis-py, with the guide's pool: bounded, blocking, health-checked.

The guide's deadpool settings map to redis-py as: max_size 50 → max_connections, connection
timeout 5 s → socket_connect_timeout, wait 10 s → BlockingConnectionPool timeout. Its 30-minute
recycle has no redis-py twin; `health_check_interval` pings idle connections instead.
"""

from __future__ import annotations

import threading
from typing import Any

import dagster as dg
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from pydantic import Field

from nova_assets import settings
from nova_assets.core.identifiers import redact
from nova_assets.errors import ConfigError, ServiceUnavailable

_clients: dict[tuple[Any, ...], redis.Redis | redis.cluster.RedisCluster] = {}
_clients_lock = threading.Lock()


class RedisResource(dg.ConfigurableResource):
    """Redis or Redis Cluster; `client()` returns a process-wide pooled client per configuration."""

    url: str = Field(description="redis://[:password@]host:port/db or rediss:// for TLS.")
    cluster: bool = Field(default=False, description="Talk to a Redis Cluster (url names any node).")
    max_connections: int = Field(default=50, description="Pool size (guide: 50).")
    connect_timeout_s: float = Field(default=5.0, description="TCP connect timeout (guide: 5 s).")
    wait_timeout_s: float = Field(default=10.0, description="Wait for a free pooled connection (guide: 10 s).")
    socket_timeout_s: float = Field(default=5.0, description="Per-command timeout.")
    health_check_interval_s: int = Field(default=30, description="Ping connections idle longer than this.")

    def _key(self) -> tuple[Any, ...]:
        return (
            self.url,
            self.cluster,
            self.max_connections,
            self.connect_timeout_s,
            self.wait_timeout_s,
            self.socket_timeout_s,
            self.health_check_interval_s,
        )

    def _common(self) -> dict[str, Any]:
        """The connection settings both clients share; checks the URL first."""
        if not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(settings.REDIS_URL, redact(self.url), "is not a redis://, rediss:// or unix:// URL")
        return {
            "socket_connect_timeout": self.connect_timeout_s,
            "socket_timeout": self.socket_timeout_s,
            "health_check_interval": self.health_check_interval_s,
        }

    def client(self) -> redis.Redis | redis.cluster.RedisCluster:
        key = self._key()
        with _clients_lock:
            existing = _clients.get(key)
            if existing is not None:
                return existing
            common = self._common()
            if self.cluster:
                created: redis.Redis | redis.cluster.RedisCluster = redis.cluster.RedisCluster.from_url(
                    self.url, max_connections=self.max_connections, **common
                )
            else:
                pool = redis.BlockingConnectionPool.from_url(
                    self.url, max_connections=self.max_connections, timeout=self.wait_timeout_s, **common
                )
                created = redis.Redis(connection_pool=pool)
            _clients[key] = created
            return created

    def async_client(self) -> redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster:
        """A new asyncio client with the same settings, for one event loop (an asyncio client is
        bound to the loop it first runs on, so it is not shared process-wide as `client()` is)."""
        common = self._common()
        if self.cluster:
            return redis.asyncio.cluster.RedisCluster.from_url(self.url, max_connections=self.max_connections, **common)
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            self.url, max_connections=self.max_connections, timeout=self.wait_timeout_s, **common
        )
        return redis.asyncio.Redis(connection_pool=pool)

    def ping(self) -> bool:
        try:
            return bool(self.client().ping())
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise ServiceUnavailable(
                "Redis", redact(self.url), settings.REDIS_URL, str(exc), self.connect_timeout_s
            ) from None
