"""One Dagster resource per external system."""

from nova_assets.resources.clickhouse import ClickHouseResource
from nova_assets.resources.kafka import KafkaResource
from nova_assets.resources.postgres import PostgresResource
from nova_assets.resources.redis import RedisResource

__all__ = ["ClickHouseResource", "KafkaResource", "PostgresResource", "RedisResource"]
