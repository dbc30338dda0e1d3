-- object: likes
-- kind: table
-- role: cdc_mirror
-- CDC mirror of Postgres public.likes, fed by Debezium through Kafka topic nova.public.likes.
-- version is the change's LSN (__lsn) and is_deleted comes from __deleted, so
-- ReplacingMergeTree keeps the latest version of each row and FINAL hides deleted ones.
-- Read it with FINAL (or argMax by version) off hot paths only.
CREATE TABLE IF NOT EXISTS {{ db }}.{{ table("likes") }} {{ on_cluster }}
(
    user_id    UUID,
    post_id    UUID,
    created_at DateTime64(6, 'UTC'),
    version     UInt64,
    is_deleted  UInt8 DEFAULT 0,
    source_ts   DateTime64(3, 'UTC') DEFAULT now64(3),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = {{ engine("ReplacingMergeTree", "version", "is_deleted") }}
ORDER BY (user_id, post_id)
SETTINGS index_granularity = 8192, {{ dedup_window(10000) }};

{{ distributed("likes", "cityHash64(user_id)") }}
