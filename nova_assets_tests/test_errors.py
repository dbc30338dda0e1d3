"""Every error that quotes configuration masks its secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from nova_assets.core.cdc.runner import connector_properties
from nova_assets.core.identifiers import redact
from nova_assets.errors import ConfigError, ServiceUnavailable, redact_secrets
from nova_assets.resources import ClickHouseResource, KafkaResource, PostgresResource, RedisResource

SECRET = "hunter2-s3cr3t"


def _assert_masked(exc: BaseException) -> None:
    assert SECRET not in str(exc) and SECRET not in repr(getattr(exc, "value", "")), str(exc)


@pytest.mark.parametrize(
    "raw",
    [
        f'{{"security.protocol": "SASL_SSL", "sasl.password": "{SECRET}", oops',  # not JSON
        f'["sasl.password", "{SECRET}"]',  # not an object
    ],
)
def test_malformed_kafka_config_is_masked(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("NOVA_KAFKA_CONFIG", raw)
    with pytest.raises(ConfigError) as info:
        KafkaResource(bootstrap_servers="127.0.0.1:1").producer_config()
    _assert_masked(info.value)
    assert "NOVA_KAFKA_CONFIG" in str(info.value)


@pytest.mark.parametrize(
    "dsn",
    [f"mysql://dbz:{SECRET}@h:5432/db", f"postgresql://dbz@:5432/db?password={SECRET}"],
)
def test_malformed_postgres_dsn_is_masked_in_the_cdc_runner(tmp_path: Path, dsn: str) -> None:
    with pytest.raises(ConfigError) as info:
        connector_properties(dsn, tmp_path)
    _assert_masked(info.value)
    assert "NOVA_POSTGRES_DSN" in str(info.value)


def test_resources_mask_urls() -> None:
    for make in (
        lambda: PostgresResource(dsn=f"mysql://u:{SECRET}@h/db").connect().__enter__(),
        lambda: RedisResource(url=f"http://:{SECRET}@h:1/0").client(),
        lambda: ClickHouseResource(url=f"tcp://default:{SECRET}@h:9000").query("SELECT 1"),
    ):
        with pytest.raises(ConfigError) as info:
            make()
        _assert_masked(info.value)


def test_unreachable_service_message_is_masked() -> None:
    exc = ServiceUnavailable("Redis", f"redis://:{SECRET}@127.0.0.1:1/0?token={SECRET}", "NOVA_REDIS_URL", "refused", 1)
    _assert_masked(exc)


@pytest.mark.parametrize(
    "text",
    [
        f"postgresql://u:{SECRET}@h/db",
        f"https://h/?user=a&password={SECRET}&x=1",
        f"host=h password={SECRET} dbname=x",
        f'{{"sasl.password":"{SECRET}"}}',
        f"{{'ssl.key.password': '{SECRET}'}}",
        f'{{"sasl.oauthbearer.client.secret": "{SECRET}"}}',
        f"https://h/api?access_token={SECRET}",
        f"Authorization: Bearer {SECRET}",
    ],
)
def test_redaction_forms(text: str) -> None:
    assert SECRET not in redact_secrets(text)
    assert SECRET not in redact(text)


def test_redaction_keeps_what_is_not_secret() -> None:
    assert (
        redact_secrets("http://default@127.0.0.1:18123/?database=nova")
        == "http://default@127.0.0.1:18123/?database=nova"
    )
    assert redact("postgresql://u:p@h:5432/db").endswith("@h:5432/db")
