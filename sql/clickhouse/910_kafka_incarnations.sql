-- object: kafka_incarnations
-- kind: table
-- Each incarnation of a Kafka topic the loader has seen (the broker's topic ID), when, and the
-- one before it. A new ID for a known topic means it was deleted and created again, or the
-- broker forgot it: its offsets start over and must not be matched against rows loaded before.
-- The first incarnation recorded for a topic also owns rows loaded before incarnations existed.
CREATE TABLE IF NOT EXISTS {{ db }}.{{ table("kafka_incarnations") }} {{ on_cluster }}
(
    topic       LowCardinality(String),
    incarnation String,
    previous    String DEFAULT '',
    seen_at     DateTime64(3, 'UTC') DEFAULT now64(3),
    run_id      String DEFAULT ''
)
ENGINE = {{ engine("MergeTree") }}
ORDER BY (topic, seen_at);

{{ distributed("kafka_incarnations", "cityHash64(topic)") }}
