"""The Kafka topics the platform reads, and the app tables Debezium mirrors (a leaf module: no imports)."""

EVENTS_TOPIC = "nova.events"
CDC_TOPIC_PREFIX = "nova.public."  # + table: Debezium's topic per Postgres table
MIRROR_TABLES = ["users", "posts", "likes", "comments", "follows", "debezium_heartbeat"]
