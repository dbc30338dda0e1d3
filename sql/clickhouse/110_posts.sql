-- object: posts
-- kind: table
-- role: cdc_mirror
-- CDC mirror of Postgres public.posts, fed by Debezium through Kafka topic nova.public.posts.
-- version is the change's LSN (__lsn) and is_deleted comes from __deleted, so
-- ReplacingMergeTree keeps the latest version of each row and FINAL hides deleted ones.
-- Read it with FINAL (or argMax by version) off hot paths only.
CREATE TABLE IF NOT EXISTS {{ db }}.{{ table("posts") }} {{ on_cluster }}
(
    id         UUID,
    author_id  UUID,
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

{{ distributed("posts", "cityHash64(id)") }}
