from __future__ import annotations

import uuid

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic

from nova_assets.errors import ConfigError, ServiceUnavailable
from nova_assets.resources.kafka import KafkaResource
from nova_assets.stack import Stack


def test_produce_consume_commit(stack: Stack) -> None:
    kafka = KafkaResource(bootstrap_servers=stack.services["kafka"].address, group_id=f"g-{uuid.uuid4()}")
    topic = f"t-{uuid.uuid4().hex[:8]}"
    admin = kafka.admin()
    futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    futures[topic].result(timeout=10)
    producer = kafka.producer()
    for i in range(5):
        producer.produce(topic, key=str(i).encode(), value=f"v{i}".encode())
    assert producer.flush(10) == 0

    consumer = kafka.consumer()
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        got: list[bytes] = []
        for _ in range(50):
            for msg in consumer.consume(num_messages=100, timeout=0.2):
                assert msg.error() is None
                got.append(msg.value())
            if len(got) >= 5:
                break
        assert got == [f"v{i}".encode() for i in range(5)]
        consumer.commit(offsets=[TopicPartition(topic, 0, 5)], asynchronous=False)
        committed = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        assert committed[0].offset == 5
    finally:
        consumer.close()
    assert topic in kafka.ping()


def test_librdkafka_settings_are_corrected() -> None:
    kafka = KafkaResource(bootstrap_servers="127.0.0.1:1")
    config = kafka.consumer_config()
    assert config["enable.auto.commit"] is False
    assert "max.poll.records" not in config
    with pytest.raises(ConfigError, match=r"max\.poll\.records"):
        kafka.consumer_config(**{"max.poll.records": 500})
    with pytest.raises(ConfigError, match=r"fetch\.wait\.max\.ms"):
        KafkaResource(bootstrap_servers="x:1", client_config={"fetch.max.wait.ms": 500}).consumer_config()


def test_extra_config_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOVA_KAFKA_CONFIG", '{"client.id": "nova-test"}')
    assert KafkaResource(bootstrap_servers="x:1").producer_config()["client.id"] == "nova-test"
    monkeypatch.setenv("NOVA_KAFKA_CONFIG", "[1]")
    with pytest.raises(ConfigError, match="NOVA_KAFKA_CONFIG"):
        KafkaResource(bootstrap_servers="x:1").producer_config()


def test_unreachable_broker_names_the_setting() -> None:
    from nova_assets.core.process import free_port

    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(ServiceUnavailable) as info:
        KafkaResource(bootstrap_servers=address, timeout_s=1).ping()
    assert f"Kafka at {address} (NOVA_KAFKA_BOOTSTRAP) did not answer within 1 s" in str(info.value)
    assert "nova stack up" in str(info.value)
