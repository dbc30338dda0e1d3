-- Debezium heartbeat: updated by the connector's heartbeat.action.query, so CDC lag stays
-- measurable while the app tables are idle. One row, upserted.
CREATE TABLE IF NOT EXISTS public.debezium_heartbeat (
    id integer PRIMARY KEY,
    ts timestamptz NOT NULL DEFAULT now()
);
