#!/bin/sh
# One-shot init (compose service postgres-init): the app schema from sql/postgres/ and the
# Debezium user (REPLICATION, read on the captured tables). Idempotent: safe on every `up`.
set -eu
export PGPASSWORD="$POSTGRES_PASSWORD"
psql="psql -v ON_ERROR_STOP=1 -h postgres -U nova -d nova"
for f in /sql/*.sql; do $psql -f "$f"; done
$psql -v dbz_password="$DEBEZIUM_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE debezium LOGIN REPLICATION PASSWORD %L', :'dbz_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'debezium') \gexec
ALTER ROLE debezium PASSWORD :'dbz_password';
GRANT CREATE ON DATABASE nova TO debezium;  -- the filtered publication is created by the connector
GRANT SELECT ON ALL TABLES IN SCHEMA public TO debezium;
GRANT INSERT, UPDATE ON public.debezium_heartbeat TO debezium;
SQL
# the connector creates the publication for the captured tables: it must own them
for t in users posts likes comments follows debezium_heartbeat; do
  $psql -c "ALTER TABLE public.$t OWNER TO debezium"
done
