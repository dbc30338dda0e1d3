-- object: post_metrics_1h
-- kind: table
-- depends: events
-- Per post and hour engagement; rows with the same key are summed at merge time, so readers
-- always aggregate with sum() ... GROUP BY (never trust one row to be the total).
-- The deduplication window lets a retried events batch (same token) be dropped here too;
-- ingestion inserts with deduplicate_blocks_in_dependent_materialized_views=1.
CREATE TABLE IF NOT EXISTS {{ db }}.{{ table("post_metrics_1h") }} {{ on_cluster }}
(
    post_id      UUID,
    window_start DateTime('UTC'),
    author_id    SimpleAggregateFunction(any, UUID),
    views        UInt64,
    clicks       UInt64,
    likes        UInt64,
    comments     UInt64,
    shares       UInt64,
    dwell_ms     UInt64
)
ENGINE = {{ engine("SummingMergeTree") }}
PARTITION BY toYYYYMM(window_start)
ORDER BY (post_id, window_start)
TTL window_start + INTERVAL 400 DAY
SETTINGS index_granularity = 8192, {{ dedup_window(10000) }};

{{ distributed("post_metrics_1h", "cityHash64(post_id)") }}
