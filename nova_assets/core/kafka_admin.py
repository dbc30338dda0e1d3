"""Kafka topics the platform creates when they are missing (events and CDC topics)."""

from __future__ import annotations

from confluent_kafka.admin import NewTopic

from nova_assets.core.ingestion.messages import EVENTS_TOPIC
from nova_assets.core.ports import Kafka


def ensure_topic(kafka: Kafka, topic: str = EVENTS_TOPIC, partitions: int = 1) -> None:
    admin = kafka.admin()
    if topic in admin.list_topics(timeout=kafka.timeout_s).topics:
        return
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    try:
        futures[topic].result(timeout=10)
    except Exception as exc:  # a concurrent creator is fine
        if "already exists" not in str(exc).lower():
            raise
