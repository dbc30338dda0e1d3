"""Ingestion, Kafka → ClickHouse in micro-batches, exactly once: `loader` consumes and inserts, `resume`
settles where a run starts, `batch`, `stats` and `messages` hold the rest.

Exactly once, and why this way:
- Offsets are committed to the consumer group only after ClickHouse accepted the batch, so a
  crash never loses messages; it can only leave a loaded-but-uncommitted tail. Commits are sent
  asynchronously (a slow broker never stalls loading); a run awaits only its last one.
- Every event and dead letter row carries its Kafka coordinates. A run starts by asking
  ClickHouse which offsets at or after the committed ones are already there, and skips them,
  so that tail is never loaded twice however the new run cuts its batches (a token alone would
  need the crashed run's exact batch boundaries, which depend on what had arrived by then).
- Each insert also carries an `insert_deduplication_token` built from its offset ranges, with
  deduplication windows on the tables and `deduplicate_blocks_in_dependent_materialized_views`,
  so retrying an insert whose outcome was unknown (timeout, lost connection) is harmless for the
  table and for the materialized views.
- Coordinates include the topic's incarnation (the broker's topic ID): a topic deleted and
  created again, or a broker that forgot its topics, restarts offsets at 0. A run notices the
  new ID (kafka_incarnations), logs it at WARNING, reports it as metadata, and loads the new
  messages from the earliest offset; neither the already-loaded check nor the deduplication
  tokens match them against rows of the old incarnation.
- The log itself is the second witness (kafka_checkpoints): runs record the fingerprint of the
  last message they loaded per partition. A broker without topic IDs gets incarnations of its
  own ("fp-..."), and a run starts a new one when the message at a checkpoint's offset is another
  one, or the log ends before it. A topic ID that changes over the same messages (a log copied
  with its offsets) keeps the old incarnation instead of loading everything again.
- Messages that retention removed before they were loaded (committed offset below the log's
  start) are counted and logged at WARNING, never skipped silently.
- CDC mirrors are ReplacingMergeTree with version = LSN: re-applying a change is idempotent.
- Runs `assign()` their partitions (no group join: instant start, no rebalances) and commit under
  the group id; the sensor and the `nova/kafka-loader` concurrency limit (dagster.yaml; ingestion
  and replay runs alike) keep one loader at a time.
"""
