#!/bin/bash
# One-shot init (compose service kafka-init): the project's topics, before any producer creates
# them with broker defaults. Idempotent.
#   nova.events          12 partitions: room for up to 12 ingestion shards (NOVA_INGEST_SHARDS)
#                        and producers; 7 days' retention, so a loader outage of days loses nothing
#   nova.public.<table>  3 partitions (Debezium keys by primary key: one row's changes stay in
#                        order; the mirrors order by LSN anyway), 7 days, delete policy (compaction
#                        would drop intermediate changes the loader has not seen yet)
set -euo pipefail
BOOTSTRAP="${BOOTSTRAP:-kafka:29092}"
RF="${REPLICATION_FACTOR:-1}"
create() {
  /opt/kafka/bin/kafka-topics.sh --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
    --topic "$1" --partitions "$2" --replication-factor "$RF" \
    --config retention.ms=604800000 --config cleanup.policy=delete --config "min.insync.replicas=$(( RF > 1 ? 2 : 1 ))"
}
create nova.events 12
for table in users posts likes comments follows debezium_heartbeat; do
  create "nova.public.$table" 3
done
/opt/kafka/bin/kafka-topics.sh --bootstrap-server "$BOOTSTRAP" --list
