"""Benchmarks: `nova bench <name> [--json]` runs `bench/<name>.py:run(as_json)`."""
