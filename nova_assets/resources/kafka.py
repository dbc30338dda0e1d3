"""Kafka through confluent-kafka (librdkafka): consumer, producer and admin factories.

Defaults follow the guide's consumer tuning, corrected for librdkafka and for the latency goal:
- `max.poll.records` is a Java-client setting; librdkafka batches with `consume(num_messages=...)`.
- `fetch.max.wait.ms` is spelled `fetch.wait.max.ms`; `receive.buffer.bytes` does not exist.
- The guide's `fetch.min.bytes=1MB` with a 500 ms wait adds up to 500 ms to every quiet
  partition; event-to-visible < 1 s wants the broker to answer as soon as data is there.
- `session.timeout.ms` 10 s: joining a group costs about half of it on Tansu.
- Producers linger 50 ms (not 5): every produce request becomes one stored batch, and Tansu 0.6
  lists every stored batch of a partition on each fetch that has data (`dynostore.rs`, `fetch`),
  so the broker's CPU grows with the number of batches in its log, not with messages. At 2,000
  events/s a 5 ms linger stored ~200 batches a second; 50 ms stores ~20, for at most 50 ms more
  event-to-visible.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
import orjson
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from pydantic import Field

from nova_assets import settings
from nova_assets.errors import ConfigError, ServiceUnavailable

KAFKA_CONFIG = settings.KAFKA_CONFIG

#: Settings of other Kafka clients that librdkafka rejects, with what to use instead.
NOT_LIBRDKAFKA = {
    "max.poll.records": "librdkafka has no such setting; batch size is consume(num_messages=N)",
    "fetch.max.wait.ms": "librdkafka spells it fetch.wait.max.ms",
    "receive.buffer.bytes": "librdkafka spells it socket.receive.buffer.bytes",
}

CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable.auto.commit": False,  # commit only after ClickHouse accepted the batch
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    "isolation.level": "read_committed",
    "fetch.min.bytes": 1,
    "fetch.wait.max.ms": 100,
    "max.partition.fetch.bytes": 10 * 1024 * 1024,
    "fetch.max.bytes": 50 * 1024 * 1024,
    "queued.min.messages": 200_000,
    "session.timeout.ms": 10_000,
    "heartbeat.interval.ms": 3_000,
    "max.poll.interval.ms": 300_000,
    "socket.receive.buffer.bytes": 1024 * 1024,
}

PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 50,  # fewer, larger batches: the broker's cost is per batch (see above)
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 1_000_000,
}


def extra_config_from_env() -> dict[str, Any]:
    """Pass-through librdkafka settings (SASL, TLS, ...) from NOVA_KAFKA_CONFIG as a JSON object."""
    raw = settings.env_str(KAFKA_CONFIG)
    if not raw:
        return {}
    shown = f"<{len(raw)} characters, not shown: it may hold secrets>"  # never quoted, even redacted
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(
            KAFKA_CONFIG, shown, f"is not JSON ({exc})", 'e.g. {"security.protocol": "SASL_SSL"}'
        ) from None
    if not isinstance(value, dict):
        raise ConfigError(
            KAFKA_CONFIG, shown, f"must be a JSON object of librdkafka settings, not {type(value).__name__}"
        )
    return value


def _validate(config: dict[str, Any], source: str) -> None:
    for key in config:
        if key in NOT_LIBRDKAFKA:
            raise ConfigError(f"{source}[{key!r}]", config[key], NOT_LIBRDKAFKA[key])


class KafkaResource(dg.ConfigurableResource):
    """Kafka cluster settings; factories build clients with the project's tuned defaults."""

    bootstrap_servers: str = Field(description="host:port[,host:port...] of the brokers.")
    client_config: dict[str, Any] = Field(
        default_factory=dict, description="librdkafka settings applied to every client (security.protocol, sasl.*)."
    )
    group_id: str = Field(default="nova-ingestion", description="Consumer group of the ingestion runs.")
    timeout_s: float = Field(default=5.0, description="How long a metadata request may take before failing.")

    def _base(self) -> dict[str, Any]:
        if not self.bootstrap_servers:
            raise ConfigError(settings.KAFKA_BOOTSTRAP, self.bootstrap_servers, "is empty", "set host:port of a broker")
        extra = {**extra_config_from_env(), **self.client_config}
        _validate(extra, "client_config")
        return {"bootstrap.servers": self.bootstrap_servers, **extra}

    def client_settings(self) -> dict[str, Any]:
        """The librdkafka settings every client starts from: the brokers and NOVA_KAFKA_CONFIG's."""
        return self._base()

    def consumer_config(self, **overrides: Any) -> dict[str, Any]:
        _validate(overrides, "consumer override")
        return {**CONSUMER_DEFAULTS, "group.id": self.group_id, **self._base(), **overrides}

    def producer_config(self, **overrides: Any) -> dict[str, Any]:
        _validate(overrides, "producer override")
        return {**PRODUCER_DEFAULTS, **self._base(), **overrides}

    def consumer(self, **overrides: Any) -> Consumer:
        return Consumer(self.consumer_config(**overrides))

    def producer(self, **overrides: Any) -> Producer:
        return Producer(self.producer_config(**overrides))

    def admin(self) -> AdminClient:
        return AdminClient(self._base())

    def ping(self) -> list[str]:
        """List topics, failing with a message that names NOVA_KAFKA_BOOTSTRAP when no broker answers."""
        admin = self.admin()
        try:
            metadata = admin.list_topics(timeout=self.timeout_s)
        except KafkaException as exc:
            raise ServiceUnavailable(
                "Kafka", self.bootstrap_servers, settings.KAFKA_BOOTSTRAP, str(exc.args[0]), self.timeout_s
            ) from None
        return sorted(metadata.topics)
