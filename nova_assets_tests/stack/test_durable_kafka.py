"""The local Kafka on SeaweedFS keeps topics, messages and group offsets across restarts of both."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition

from nova_assets.core.ingestion.offsets import fetched_highs, partition_lags
from nova_assets.core.process import free_port, free_port_block
from nova_assets.generate.events import produce_events
from nova_assets.resources import KafkaResource
from nova_assets.stack.services import KafkaService, S3Service

pytestmark = pytest.mark.integration  # starts the project's services itself


@pytest.fixture
def durable(tmp_path: Path) -> Iterator[tuple[S3Service, KafkaService]]:
    home = tmp_path / "home"
    s3 = S3Service(home, free_port_block(10))
    kafka = KafkaService(home, free_port(), storage=s3)
    s3.start_and_wait(60)
    kafka.start_and_wait()
    try:
        yield s3, kafka
    finally:
        kafka.stop()
        s3.stop()


def test_topics_messages_and_offsets_survive_a_restart(durable: tuple[S3Service, KafkaService]) -> None:
    s3, kafka = durable
    assert (s3.dir / "secret").stat().st_mode & 0o077 == 0
    resource = KafkaResource(bootstrap_servers=kafka.address, timeout_s=5, client_config={"log_level": 0})
    produced = produce_events(resource, rate=0, duration_s=60, total=20_000)["valid"]
    consumer = resource.consumer()
    consumer.commit(offsets=[TopicPartition("nova.events", 0, 12_345)], asynchronous=False)
    consumer.close()

    kafka.stop()
    s3.stop()
    s3.start_and_wait(60)
    kafka.start_and_wait()

    consumer = resource.consumer()
    try:
        assert consumer.committed([TopicPartition("nova.events", 0)], timeout=10)[0].offset == 12_345
        consumer.assign([TopicPartition("nova.events", 0, 0)])
        seen = 0
        for _ in range(200):
            seen += sum(1 for m in consumer.consume(10_000, 0.5) if m.error() is None)
            if seen >= produced:
                break
        assert seen == produced
    finally:
        consumer.close()


def test_lag_is_not_hidden_by_list_offsets(durable: tuple[S3Service, KafkaService]) -> None:
    """ListOffsets on this broker under-reports the end; the lag check verifies by a fetch."""
    _s3, kafka = durable
    resource = KafkaResource(bootstrap_servers=kafka.address, timeout_s=5, client_config={"log_level": 0})
    produced = produce_events(resource, rate=0, duration_s=60, total=30_000)["valid"]
    consumer = resource.consumer()
    try:
        consumer.commit(offsets=[TopicPartition("nova.events", 0, produced - 10)], asynchronous=False)
        listed = partition_lags(consumer, ("nova.events",), timeout_s=5)[0]
        verified = partition_lags(consumer, ("nova.events",), timeout_s=5, verify_s=2.0)[0]
        assert verified.high == produced and verified.lag == 10
        assert listed.high <= produced  # what ListOffsets says (here: the last batch's start + 1)
        assert fetched_highs(consumer, {("nova.events", 0): produced}, 0.5) == {}  # nothing past the end
    finally:
        consumer.close()


def test_the_stack_runs_a_durable_kafka_only_when_asked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from nova_assets.errors import ConfigError
    from nova_assets.stack import Stack

    monkeypatch.delenv("NOVA_STACK_SERVICES", raising=False)
    monkeypatch.delenv("NOVA_KAFKA_STORAGE", raising=False)
    plain = Stack(home=tmp_path)
    assert "s3" not in plain.services and plain.services["kafka"].storage is None  # type: ignore[attr-defined]
    assert "memory://" in " ".join(plain.services["kafka"].command())
    monkeypatch.setenv("NOVA_KAFKA_STORAGE", "s3")
    durable = Stack(home=tmp_path)
    assert list(durable.services)[:3] == ["clickhouse", "s3", "kafka"]  # storage starts before the broker
    assert durable.services["kafka"].storage is durable.services["s3"]  # type: ignore[attr-defined]
    assert "s3://tansu/" in " ".join(durable.services["kafka"].command())
    monkeypatch.setenv("NOVA_KAFKA_STORAGE", "disk")
    with pytest.raises(ConfigError, match="NOVA_KAFKA_STORAGE='disk'"):
        Stack(home=tmp_path)
