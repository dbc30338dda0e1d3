-- object: feed_recommendations
-- kind: table
-- asset: recommendations
-- depends: post_metrics_1h, user_author_90d, users, posts, likes, comments, follows, feed_versions
-- Ranked posts per user. Each recompute writes a new version (its own partition); readers take
-- the newest version listed in feed_versions, so they see the previous complete version until
-- the new one is published, and old versions are dropped by partition.
CREATE TABLE IF NOT EXISTS {{ db }}.{{ table("feed_recommendations") }} {{ on_cluster }}
(
    version     UInt64,
    user_id     UUID,
    rank        UInt16,
    post_id     UUID,
    author_id   UUID,
    score       Float64,
    reason      LowCardinality(String),
    computed_at DateTime64(3, 'UTC')
)
ENGINE = {{ engine("MergeTree") }}
PARTITION BY version
ORDER BY (user_id, rank)
SETTINGS index_granularity = 1024;

{{ distributed("feed_recommendations", "cityHash64(user_id)") }}
