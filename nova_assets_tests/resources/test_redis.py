from __future__ import annotations

import pytest

from nova_assets.core.process import free_port
from nova_assets.errors import ConfigError, ServiceUnavailable
from nova_assets.resources.redis import RedisResource
from nova_assets.stack import Stack


def test_set_get_and_pool_settings(stack: Stack) -> None:
    resource = RedisResource(url=stack.env()["NOVA_REDIS_URL"])
    client = resource.client()
    assert client is resource.client()  # one pool per process and configuration
    client.set("nova:test", b"hello", ex=30)
    assert client.get("nova:test") == b"hello"
    assert 0 < client.ttl("nova:test") <= 30
    pool = client.connection_pool
    assert pool.max_connections == 50
    assert pool.timeout == 10.0
    assert pool.connection_kwargs["socket_connect_timeout"] == 5.0
    assert pool.connection_kwargs["health_check_interval"] == 30


def test_errors_name_the_setting() -> None:
    with pytest.raises(ConfigError, match="NOVA_REDIS_URL"):
        RedisResource(url="http://nope").client()
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    with pytest.raises(ServiceUnavailable) as info:
        RedisResource(url=url, connect_timeout_s=1).ping()
    assert "NOVA_REDIS_URL" in str(info.value)
    assert "hunter2" not in str(info.value)
