-- object: comments
-- kind: table
-- role: cdc_mirror
-- CDC mirror of Postgres public.comments, fed by Debezium through Kafka topic nova.public.comments.
-- version is the change's LSN (__lsn) and is_deleted comes from __deleted, so
-- ReplacingMergeTree keeps the latest version of each row and FINAL hides deleted ones.
-- Read it with FINAL (or argMax by version) off hot paths only.
CREATE TABLE IF NOT EXISTS {{ db }}.{{ table("comments") }} {{ on_cluster }}
(
    id         UUID,
    post_id    UUID,
    user_id    UUID,
    body       String,
    created_at DateTime64(6, 'UTC'),
    updated_at DateTime64(6, 'UTC'),
    version     UInt64,
    is_deleted  UInt8 DEFAULT 0,
    source_ts   DateTime64(3, 'UTC') DEFAULT now64(3),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = {{ engine("ReplacingMergeTree", "version", "is_deleted") }}
ORDER BY (id)
SETTINGS index_granularity = 8192, {{ dedup_window(10000) }};

{{ distributed("comments", "cityHash64(id)") }}
