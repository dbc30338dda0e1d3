-- object: events
-- kind: table
-- Interaction events from Kafka topic nova.events, loaded exactly once by the ingestion runs.
-- MergeTree with a deduplication window: a batch re-sent with the same insert_deduplication_token
-- (deterministic per topic/partition/offset range) is dropped, and so are its MV rows. Unlike the
-- guide's claim, event_id in ORDER BY deduplicates nothing; the data-quality check watches for
-- duplicate event_id from producers. ingested_at is when the row became visible: ingested_at -
-- event_time is the event-to-visible latency the SLO checks read.
CREATE TABLE IF NOT EXISTS {{ db }}.{{ table("events") }} {{ on_cluster }}
(
    event_id        UUID,
    event_time      DateTime64(3, 'UTC'),
    user_id         UUID,
    post_id         UUID,
    author_id       UUID,
    action          LowCardinality(String),
    dwell_ms        UInt32,
    device          LowCardinality(String),
    app_ver         LowCardinality(String),
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3),
    kafka_topic     LowCardinality(String) DEFAULT '',
    kafka_partition Int32 DEFAULT -1,
    kafka_offset    Int64 DEFAULT -1,
    -- lets a restarted ingestion run find the offsets it already loaded without a full scan
    INDEX kafka_offset_minmax kafka_offset TYPE minmax GRANULARITY 1,
    -- lets the SLO checks read the last minutes of ingestion without scanning the month
    INDEX ingested_at_minmax ingested_at TYPE minmax GRANULARITY 1
)
ENGINE = {{ engine("MergeTree") }}
PARTITION BY toYYYYMM(event_time)
ORDER BY (user_id, event_time, event_id)
SETTINGS index_granularity = 8192, {{ dedup_window(10000) }};

{{ distributed("events", "cityHash64(user_id)") }}
