"""The Kafka topics the platform reads, and the app tables Debezium mirrors (a leaf module: no imports)."""

EVENTS_TOPIC = "nova.events"
CDC_TOPIC_PREFIX = "nova.public."  # + table: Debezium's topic per Postgres table
APP_TABLES = ("users", "posts", "likes", "comments", "follows")  # the Nova app's tables, mirrored in ClickHouse
HEARTBEAT_TABLE = "debezium_heartbeat"  # written by Debezium itself, so CDC lag stays measurable when the app is idle
MIRROR_TABLES = [*APP_TABLES, HEARTBEAT_TABLE]  # every table Debezium captures
INGESTED_TABLES = ("events", *MIRROR_TABLES, "dead_letters")  # the tables the ingestion runs write (and only they)
