-- object: feed_versions
-- kind: table
-- One row per published recommendation version; written only after all of its rows are in.
CREATE TABLE IF NOT EXISTS {{ db }}.{{ table("feed_versions") }} {{ on_cluster }}
(
    version      UInt64,
    published_at DateTime64(3, 'UTC') DEFAULT now64(3),
    users        UInt64,
    rows         UInt64,
    params       String
)
ENGINE = {{ engine("ReplacingMergeTree", "published_at") }}
ORDER BY version;

{{ distributed("feed_versions", "version") }}
