-- object: users
-- 1 for a row Debezium read in its snapshot (op = r: a backfill of what existed before CDC started,
-- its source_ts the read, not a commit), 0 for a streamed change. The cdc_lag SLO (commit →
-- visible) judges streamed changes only; rows loaded before this migration count as streamed.
ALTER TABLE {{ db }}.{{ table("users") }} {{ on_cluster }}
    ADD COLUMN IF NOT EXISTS snapshot UInt8 DEFAULT 0 AFTER source_ts;
{% if on_cluster %}
ALTER TABLE {{ db }}.users {{ on_cluster }}
    ADD COLUMN IF NOT EXISTS snapshot UInt8 DEFAULT 0 AFTER source_ts;
{% endif %}
