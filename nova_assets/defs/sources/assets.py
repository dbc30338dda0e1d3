"""Where the data comes from: the app's Postgres tables and the Kafka topics, as source assets.

They are not materialized by Dagster (the app writes Postgres, Debezium and the apps write
Kafka); they are here so the lineage starts at the sources: Postgres table → its Debezium topic
→ the ClickHouse mirror, and `nova.events` → `events` → the views → recommendations → cache.
The ingestion sensor records each topic's lag as an observation on its asset.
"""

import dagster as dg

from nova_assets.topics import CDC_TOPIC_PREFIX, EVENTS_TOPIC, MIRROR_TABLES

GROUP = "sources"


def topic_key(topic: str) -> dg.AssetKey:
    return dg.AssetKey(["kafka", topic])


def postgres_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["postgres", table])


postgres_tables = [
    dg.AssetSpec(
        key=postgres_key(table),
        group_name=GROUP,
        kinds={"postgres"},
        description=f"The Nova app's `public.{table}` table (sql/postgres/), replicated by Debezium (pgoutput).",
        metadata={"sql_dir": "sql/postgres/"},
    )
    for table in MIRROR_TABLES
]

cdc_topics = [
    dg.AssetSpec(
        key=topic_key(f"{CDC_TOPIC_PREFIX}{table}"),
        group_name=GROUP,
        kinds={"kafka"},
        deps=[postgres_key(table)],
        description=f"Debezium change records of `public.{table}` (JSON, unwrapped, keyed by primary key).",
    )
    for table in MIRROR_TABLES
]

events_topic = dg.AssetSpec(
    key=topic_key(EVENTS_TOPIC),
    group_name=GROUP,
    kinds={"kafka"},
    description="Interaction events from the mobile and web apps (JSON), loaded into `events` exactly once.",
)

#: the source each ClickHouse object reads from Kafka (its lineage upstream)
SOURCE_OF = {"events": topic_key(EVENTS_TOPIC)} | {t: topic_key(f"{CDC_TOPIC_PREFIX}{t}") for t in MIRROR_TABLES}

source_specs = [*postgres_tables, *cdc_topics, events_topic]
