#!/bin/sh
# One-shot init (compose service postgres-init), as the superuser `postgres`; idempotent.
#   nova      the Nova app's role: owns the schema of sql/postgres/, no superuser, no replication
#   debezium  the connector's role (Debezium's Postgres permissions guide): LOGIN REPLICATION,
#             SELECT on the captured tables only (the snapshot), INSERT/UPDATE on its heartbeat.
# The publication is created here by the tables' owner (`publication.autocreate.mode=disabled`
# in the connector), so the debezium role needs neither ownership nor CREATE on the database.
set -eu
export PGPASSWORD="$POSTGRES_PASSWORD"
super="psql -v ON_ERROR_STOP=1 -h postgres -U postgres -d nova"
$super -v app_password="$POSTGRES_APP_PASSWORD" -v dbz_password="$DEBEZIUM_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE nova LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L', :'app_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'nova') \gexec
ALTER ROLE nova LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD :'app_password';
SELECT format('CREATE ROLE debezium LOGIN REPLICATION PASSWORD %L', :'dbz_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'debezium') \gexec
ALTER ROLE debezium LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'dbz_password';
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO nova;
GRANT USAGE ON SCHEMA public TO debezium;
SQL
# the app schema, created by (and so owned by) the app's role
export PGPASSWORD="$POSTGRES_APP_PASSWORD"
for f in /sql/*.sql; do psql -v ON_ERROR_STOP=1 -h postgres -U nova -d nova -f "$f"; done
psql -v ON_ERROR_STOP=1 -h postgres -U nova -d nova <<'SQL'
GRANT SELECT ON public.users, public.posts, public.likes, public.comments, public.follows,
                public.debezium_heartbeat TO debezium;
GRANT INSERT, UPDATE ON public.debezium_heartbeat TO debezium;
SELECT 'CREATE PUBLICATION dbz_publication FOR TABLE public.users, public.posts, public.likes, '
       'public.comments, public.follows, public.debezium_heartbeat'
WHERE NOT EXISTS (SELECT FROM pg_publication WHERE pubname = 'dbz_publication') \gexec
SQL
