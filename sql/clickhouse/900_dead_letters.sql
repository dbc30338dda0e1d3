-- object: dead_letters
-- kind: table
-- Messages that could not be loaded, with their raw bytes, Kafka coordinates and the reason.
-- Written in the same exactly-once batches as the good rows (same deduplication window).
CREATE TABLE IF NOT EXISTS {{ db }}.{{ table("dead_letters") }} {{ on_cluster }}
(
    topic       LowCardinality(String),
    partition   Int32,
    offset      Int64,
    key         String,
    payload     String,
    error       String,
    error_kind  LowCardinality(String),
    received_at DateTime64(3, 'UTC') DEFAULT now64(3),
    run_id      String DEFAULT ''
)
ENGINE = {{ engine("MergeTree") }}
PARTITION BY toYYYYMM(received_at)
ORDER BY (topic, partition, offset)
TTL toDateTime(received_at) + INTERVAL 30 DAY
SETTINGS {{ dedup_window(10000) }};

{{ distributed("dead_letters", "cityHash64(topic, partition)") }}
