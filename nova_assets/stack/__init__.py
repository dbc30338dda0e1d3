"""The local stack: the ClickHouse server over chDB, Tansu (Kafka), valkey (Redis), Postgres, Debezium."""

from nova_assets.stack.manager import SERVICES, Stack
from nova_assets.stack.services import StackError

__all__ = ["SERVICES", "Stack", "StackError"]
