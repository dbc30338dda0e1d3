"""The Java publisher's build and its producer settings (the engine itself runs in defs/cdc/test_cdc.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nova_assets.core.cdc import publisher
from nova_assets.errors import ConfigError


def test_the_publisher_compiles_once_per_source_version(tmp_path: Path) -> None:
    if publisher.javac() is None:
        pytest.skip("no javac on this machine: nova cdc uses the Python handler")
    first = publisher.compiled(tmp_path)
    assert first is not None and (first / "nova" / "cdc" / "KafkaPublisher.class").exists()
    stamp = (first / "nova" / "cdc" / "KafkaPublisher.class").stat().st_mtime_ns
    assert publisher.compiled(tmp_path) == first  # cached: not compiled again
    assert (first / "nova" / "cdc" / "KafkaPublisher.class").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary directory left


def test_librdkafka_settings_become_the_java_clients() -> None:
    config = publisher.producer_config(
        {"bootstrap.servers": "k:9092", "security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512",
         "sasl.username": "nova", "sasl.password": 'p"w', "ssl.ca.location": "/ca.pem", "log_level": 0}
    )  # fmt: skip
    assert config["bootstrap.servers"] == "k:9092" and config["security.protocol"] == "SASL_SSL"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["sasl.jaas.config"] == (
        'org.apache.kafka.common.security.scram.ScramLoginModule required username="nova" password="p\\"w";'
    )
    assert config["ssl.truststore.type"] == "PEM" and config["ssl.truststore.location"] == "/ca.pem"
    assert config["acks"] == "all" and config["enable.idempotence"] == "false"
    assert "log_level" not in config


def test_a_setting_the_java_client_lacks_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"queue\.buffering\.max\.ms"):
        publisher.producer_config({"bootstrap.servers": "k:9092", "queue.buffering.max.ms": 5})
    with pytest.raises(ConfigError, match="GSSAPI"):
        publisher.producer_config({"bootstrap.servers": "k:9092", "sasl.mechanism": "GSSAPI", "sasl.username": "x"})
    monkeypatch.setenv("NOVA_CDC_PUBLISHER", "rust")
    with pytest.raises(ConfigError, match="NOVA_CDC_PUBLISHER"):
        publisher.chosen()
    monkeypatch.setenv("NOVA_CDC_PUBLISHER", "Python")
    assert publisher.chosen() == "python"
