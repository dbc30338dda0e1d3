-- object: schema_migrations
-- kind: table
-- Forward migrations (sql/clickhouse/migrations/) applied to this database, one row each.
CREATE TABLE IF NOT EXISTS {{ db }}.{{ table("schema_migrations") }} {{ on_cluster }}
(
    name       String,
    object     LowCardinality(String),
    checksum   String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = {{ engine("ReplacingMergeTree", "applied_at") }}
ORDER BY name;

{{ distributed("schema_migrations", "cityHash64(name)") }}
