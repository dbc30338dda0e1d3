"""The Dagster-free core: what the platform does (loading Kafka into ClickHouse, CDC, scoring, cache
warming, DDL, SLO measurement), called by the Dagster definitions in `defs/`, the CLI, the read
path and the benchmarks. Nothing here imports Dagster, `defs`, or anything above it
(`nova_assets_tests/test_layers.py` holds it to that)."""
