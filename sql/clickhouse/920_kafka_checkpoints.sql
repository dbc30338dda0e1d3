-- object: kafka_checkpoints
-- kind: table
-- A fingerprint of a message the loader has loaded, per topic incarnation and partition (the
-- newest one wins). It lets a run tell, without the broker's topic IDs, whether the log it reads
-- is the one it loaded from: the message at the checkpoint's offset must still be the same
-- message. A different one, or a log that ends before that offset, means the topic was
-- re-created or the broker forgot it. A topic ID that changes while the message is the same
-- means the log was copied with its offsets (a migration), not reset.
CREATE TABLE IF NOT EXISTS {{ db }}.{{ table("kafka_checkpoints") }} {{ on_cluster }}
(
    topic       LowCardinality(String),
    incarnation String,
    partition   Int32,
    offset      Int64,
    fingerprint String,
    run_id      String DEFAULT '',
    written_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = {{ engine("ReplacingMergeTree", "offset") }}
ORDER BY (topic, incarnation, partition);

{{ distributed("kafka_checkpoints", "cityHash64(topic)") }}
