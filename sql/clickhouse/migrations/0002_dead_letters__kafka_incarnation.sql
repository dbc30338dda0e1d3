-- object: dead_letters
-- The topic incarnation of a rejected message, as for events (0001_events__kafka_incarnation).
ALTER TABLE {{ db }}.{{ table("dead_letters") }} {{ on_cluster }}
    ADD COLUMN IF NOT EXISTS incarnation LowCardinality(String) DEFAULT '' AFTER offset;
{% if on_cluster %}
ALTER TABLE {{ db }}.dead_letters {{ on_cluster }}
    ADD COLUMN IF NOT EXISTS incarnation LowCardinality(String) DEFAULT '' AFTER offset;
{% endif %}
