"""Kafka → ClickHouse ingestion: the sensor, the run job, replays, message validation."""

import dagster as dg

from nova_assets.defs.ingestion.assets import ingested_tables
from nova_assets.defs.ingestion.jobs import kafka_ingestion_job, kafka_replay_job
from nova_assets.defs.ingestion.sensors import kafka_ingestion_sensor

defs = dg.Definitions(
    assets=ingested_tables, jobs=[kafka_ingestion_job, kafka_replay_job], sensors=[kafka_ingestion_sensor]
)
