-- object: user_author_daily
-- kind: table
-- depends: events
-- User→author interactions per day. 90-day totals cannot be kept by replacing rows (the guide's
-- ReplacingMergeTree with last_interaction in ORDER BY never replaces anything), so days are
-- summed here and user_author_90d adds up the last 90 of them; older days expire by TTL.
-- The deduplication window lets a retried events batch (same token) be dropped here too;
-- ingestion inserts with deduplicate_blocks_in_dependent_materialized_views=1.
CREATE TABLE IF NOT EXISTS {{ db }}.{{ table("user_author_daily") }} {{ on_cluster }}
(
    user_id          UUID,
    author_id        UUID,
    day              Date,
    views            UInt64,
    clicks           UInt64,
    likes            UInt64,
    comments         UInt64,
    shares           UInt64,
    dwell_ms         UInt64,
    last_interaction SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = {{ engine("SummingMergeTree") }}
PARTITION BY toYYYYMM(day)
ORDER BY (user_id, author_id, day)
TTL day + INTERVAL 91 DAY
SETTINGS index_granularity = 8192, {{ dedup_window(10000) }};

{{ distributed("user_author_daily", "cityHash64(user_id)") }}
