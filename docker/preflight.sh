#!/bin/sh
# Refuses to start the platform with a secret that is missing, still a placeholder from
# .env.example (change-me-*), or shorter than 16 characters. Run by the compose service
# `preflight`, which every long-running service waits for; prints the names, never the values.
# Usage: preflight.sh [NAME ...]  (default: every secret the compose files use)
MIN_LENGTH=16
NAMES="${*:-CLICKHOUSE_DDL_PASSWORD CLICKHOUSE_PIPELINE_PASSWORD CLICKHOUSE_FEED_PASSWORD POSTGRES_PASSWORD POSTGRES_APP_PASSWORD DEBEZIUM_PASSWORD DAGSTER_POSTGRES_PASSWORD GRAFANA_ADMIN_PASSWORD REDIS_PASSWORD KAFKA_ADMIN_PASSWORD KAFKA_NOVA_PASSWORD KAFKA_CONNECT_PASSWORD}"
bad=0
for name in $NAMES; do
  value=$(printenv "$name" || true)
  case "$value" in
    "") echo "preflight: $name is not set"; bad=1 ;;
    change-me*|changeme*|password*|secret*) echo "preflight: $name is still a placeholder; set a real secret"; bad=1 ;;
    *) if [ "${#value}" -lt "$MIN_LENGTH" ]; then
         echo "preflight: $name is shorter than $MIN_LENGTH characters"; bad=1
       fi ;;
  esac
done
[ "$bad" = 0 ] && echo "preflight: every secret is set"
exit "$bad"
