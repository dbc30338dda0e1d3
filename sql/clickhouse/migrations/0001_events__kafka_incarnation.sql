-- object: events
-- Rows remember the incarnation of their topic (the broker's topic ID), so messages of a topic
-- that was deleted and created again, or that a broker forgot, are told apart from old ones at
-- the same offsets. Rows loaded before this migration keep '' (see kafka_incarnations).
ALTER TABLE {{ db }}.{{ table("events") }} {{ on_cluster }}
    ADD COLUMN IF NOT EXISTS kafka_incarnation LowCardinality(String) DEFAULT '' AFTER kafka_offset;
{% if on_cluster %}
ALTER TABLE {{ db }}.events {{ on_cluster }}
    ADD COLUMN IF NOT EXISTS kafka_incarnation LowCardinality(String) DEFAULT '' AFTER kafka_offset;
{% endif %}
