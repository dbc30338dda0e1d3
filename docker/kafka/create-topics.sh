#!/bin/bash
# One-shot init (compose service kafka-init): the project's topics, before any producer creates
# them with broker defaults, and each principal's ACLs (the broker authorizes every request and
# allows nothing without an ACL). Idempotent.
#   nova.events          12 partitions: room for up to 12 ingestion shards (NOVA_INGEST_SHARDS)
#                        and producers; 7 days' retention, so a loader outage of days loses nothing
#   nova.public.<table>  3 partitions (Debezium keys by primary key: one row's changes stay in
#                        order; the mirrors order by LSN anyway), 7 days, delete policy (compaction
#                        would drop intermediate changes the loader has not seen yet)
# Principals: nova (Dagster and its runs: read and write nova.*, its consumer groups), connect
# (Kafka Connect: its own topics and group, write nova.*, Debezium's heartbeat topic).
set -euo pipefail
BOOTSTRAP="${BOOTSTRAP:-kafka:29092}"
RF="${REPLICATION_FACTOR:-1}"
# shellcheck source=client.sh
. /client.sh
KAFKA=/opt/kafka/bin
create() {
  "$KAFKA/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$CLIENT_CONFIG" --create --if-not-exists \
    --topic "$1" --partitions "$2" --replication-factor "$RF" \
    --config retention.ms=604800000 --config cleanup.policy=delete --config "min.insync.replicas=$(( RF > 1 ? 2 : 1 ))"
}
acl() {
  "$KAFKA/kafka-acls.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$CLIENT_CONFIG" --add --force "$@"
}
create nova.events 12
for table in users posts likes comments follows debezium_heartbeat; do
  create "nova.public.$table" 3
done
# nova: the loaders, the sensor's lag and the generators
acl --allow-principal User:nova --operation Read --operation Write --operation Describe \
  --topic nova. --resource-pattern-type prefixed
acl --allow-principal User:nova --operation Read --operation Describe --group nova --resource-pattern-type prefixed
# connect: the worker's own topics and group, Debezium's output and heartbeat topics
acl --allow-principal User:connect --operation All --topic nova_connect_ --resource-pattern-type prefixed
acl --allow-principal User:connect --operation Write --operation Describe --operation Create \
  --topic nova. --resource-pattern-type prefixed
acl --allow-principal User:connect --operation All --topic __debezium-heartbeat --resource-pattern-type prefixed
acl --allow-principal User:connect --operation Read --operation Describe --group nova-connect
acl --allow-principal User:connect --operation Describe --operation DescribeConfigs --cluster
"$KAFKA/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$CLIENT_CONFIG" --list
rm -f "$CLIENT_CONFIG"
