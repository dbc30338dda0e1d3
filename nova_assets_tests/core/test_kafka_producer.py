"""A producer keeps delivering after the local broker restarts and forgets its producer ID."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition

from nova_assets.core.kafka_admin import ensure_topic
from nova_assets.core.kafka_producer import SteadyProducer
from nova_assets.core.process import free_port
from nova_assets.resources import KafkaResource
from nova_assets.stack.services import KafkaService

pytestmark = pytest.mark.integration


def _log(kafka: KafkaResource, partitions: int) -> list[int]:
    consumer = kafka.consumer()
    consumer.assign([TopicPartition("nova.events", p, 0) for p in range(partitions)])
    values: list[int] = []
    quiet = time.monotonic()
    try:
        while time.monotonic() - quiet < 3:
            got = [m for m in consumer.consume(1000, 0.5) if m.error() is None]
            if got:
                quiet = time.monotonic()
            values += [int(m.value()) for m in got]
    finally:
        consumer.close()
    return values


def test_deliveries_resume_after_the_broker_forgets_the_producer(tmp_path: Path) -> None:
    service = KafkaService(tmp_path / "home", free_port())
    service.start_and_wait()
    kafka = KafkaResource(bootstrap_servers=service.address, timeout_s=5, client_config={"log_level": 0})
    try:
        ensure_topic(kafka, "nova.events", 4)
        producer = SteadyProducer(kafka.producer, stall_s=3.0)
        sent, restarted_at = 0, -1
        began = time.monotonic()
        while time.monotonic() - began < 15:
            for _ in range(30):
                producer.produce("nova.events", str(sent).encode())
                sent += 1
            producer.poll(0)
            time.sleep(0.1)
            if restarted_at < 0 and time.monotonic() - began > 2:
                assert producer.delivered > 0 and producer.renewals == 0  # a healthy broker: never renewed
                service.stop()  # everything it held is gone, producer IDs too
                service.start_and_wait()
                ensure_topic(kafka, "nova.events", 4)
                restarted_at = sent
        assert producer.flush(20) == 0 and producer.failures == []
        assert producer.renewals == 1
        after = [v for v in _log(kafka, 4) if v >= restarted_at]
        assert sorted(after) == list(range(restarted_at, sent))  # every message since the restart, once
    finally:
        service.stop()


def test_a_batch_larger_than_the_local_queue_is_delivered_whole_and_in_order(tmp_path: Path) -> None:
    """`produce_many` hands librdkafka what fits, serves deliveries and goes on with the rest."""
    service = KafkaService(tmp_path / "home", free_port())
    service.start_and_wait()
    kafka = KafkaResource(bootstrap_servers=service.address, timeout_s=5, client_config={"log_level": 0})
    try:
        ensure_topic(kafka, "nova.events", 1)
        producer = SteadyProducer(lambda: kafka.producer(**{"queue.buffering.max.messages": 50}))
        producer.produce_many("nova.events", [str(i).encode() for i in range(500)])
        assert producer.flush(20) == 0 and producer.failures == []
        assert producer.delivered == 500
        assert _log(kafka, 1) == list(range(500))
    finally:
        service.stop()
