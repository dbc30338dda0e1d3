"""The local stack: Tansu (Kafka), valkey (Redis), embedded Postgres and the chDB directory."""

from nova_assets.stack.manager import SERVICES, Stack, StackError

__all__ = ["SERVICES", "Stack", "StackError"]
