"""Comparing the ClickHouse mirrors with their Postgres source, row by row (tests, `nova bench cdc`)."""

from __future__ import annotations

from nova_assets.core.ports import ClickHouse, Postgres

#: the columns compared per table (keys plus the fields the app changes)
MIRROR_COLUMNS: dict[str, tuple[str, ...]] = {
    "users": ("id", "username", "bio"),
    "posts": ("id", "author_id", "body"),
    "likes": ("user_id", "post_id"),
    "comments": ("id", "post_id", "user_id", "body"),
    "follows": ("follower_id", "followee_id"),
}

State = dict[str, set[tuple[str, ...]]]


def source_state(postgres: Postgres) -> State:
    out = {}
    with postgres.connect() as conn:
        for table, cols in MIRROR_COLUMNS.items():
            rows = conn.execute(f"SELECT {', '.join(cols)} FROM {table}").fetchall()  # our own identifiers
            out[table] = {tuple(str(v) for v in r) for r in rows}
    return out


def mirror_state(clickhouse: ClickHouse) -> State:
    out = {}
    for table, cols in MIRROR_COLUMNS.items():
        select = ", ".join(f"toString({c})" for c in cols)
        out[table] = {tuple(r) for r in clickhouse.query(f"SELECT {select} FROM {table} FINAL").result_rows}
    return out


def differences(source: State, mirror: State) -> int:
    """Rows present on one side only (a lost, extra or stale row counts)."""
    return sum(len(source[t] ^ mirror.get(t, set())) for t in source)
