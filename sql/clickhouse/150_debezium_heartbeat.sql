-- object: debezium_heartbeat
-- kind: table
-- role: cdc_mirror
-- Mirror of Postgres public.debezium_heartbeat, which Debezium's heartbeat.action.query updates
-- every few seconds: while the app tables are idle, its source_ts still moves, so CDC lag
-- (commit in Postgres → visible here) stays measurable and a stopped CDC shows as growing lag.
CREATE TABLE IF NOT EXISTS {{ db }}.{{ table("debezium_heartbeat") }} {{ on_cluster }}
(
    id          Int32,
    ts          DateTime64(6, 'UTC'),
    version     UInt64,
    is_deleted  UInt8 DEFAULT 0,
    source_ts   DateTime64(3, 'UTC') DEFAULT now64(3),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = {{ engine("ReplacingMergeTree", "version", "is_deleted") }}
ORDER BY (id)
TTL toDateTime(ingested_at) + INTERVAL 7 DAY
SETTINGS {{ dedup_window(10000) }};

{{ distributed("debezium_heartbeat", "id") }}
