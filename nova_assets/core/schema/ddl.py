"""Applying `sql/clickhouse/` to a database and describing what a database really holds.

Drift detection builds the expected objects in a scratch database from the same files, then
compares ClickHouse's own description of both (columns, engine, keys, TTL, view queries), so the
comparison never depends on how a DDL string happens to be formatted.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client

from nova_assets.core.identifiers import quote_identifier
from nova_assets.core.schema.sql_files import Renderer, SqlObject, load_objects

MIGRATIONS_OBJECT = "schema_migrations"
_TTL = re.compile(r"\bTTL (.+?)(?: SETTINGS |$)")


@dataclass
class ApplyResult:
    statements: list[str]
    created: bool
    migrations: list[str]


def object_exists(client: Client, database: str, name: str) -> bool:
    found = client.query(
        "SELECT count() FROM system.tables WHERE database = {db:String} AND name = {name:String}",
        parameters={"db": database, "name": name},
    )
    return bool(found.result_rows[0][0])


def apply_object(client: Client, obj: SqlObject, renderer: Renderer) -> ApplyResult:
    """Create the object if missing and run its pending forward migrations; never drops anything."""
    stored_name = renderer.local_name(obj.name) if obj.is_table else obj.name
    existed = object_exists(client, renderer.database, stored_name)
    statements = renderer.render(obj.template)
    for statement in statements:
        client.command(statement)
    return ApplyResult(statements, not existed, apply_migrations(client, obj, renderer))


def apply_all(client: Client, renderer: Renderer, objects: Iterable[SqlObject] | None = None) -> dict[str, ApplyResult]:
    """Apply every object of sql/clickhouse/ (or the given ones) in file order; idempotent."""
    return {obj.name: apply_object(client, obj, renderer) for obj in (objects or load_objects())}


def apply_migrations(client: Client, obj: SqlObject, renderer: Renderer) -> list[str]:
    if not obj.migrations:
        return []
    ledger = next(o for o in load_objects() if o.name == MIGRATIONS_OBJECT)
    for statement in renderer.render(ledger.template):
        client.command(statement)
    done = {
        row[0]
        for row in client.query(
            "SELECT name FROM schema_migrations WHERE object = {object:String}", parameters={"object": obj.name}
        ).result_rows
    }
    applied = []
    for migration in obj.migrations:
        if migration.name in done:
            continue
        for statement in renderer.render(migration.template):
            client.command(statement)
        client.insert(
            "schema_migrations",
            [[migration.name, obj.name, migration.checksum]],
            column_names=["name", "object", "checksum"],
        )
        applied.append(migration.name)
    return applied


def describe(client: Client, database: str, name: str, *, cluster: bool = False) -> dict[str, Any] | None:
    """What ClickHouse says an object is, normalised for comparison; None when missing."""
    rows = client.query(
        "SELECT engine, engine_full, sorting_key, primary_key, partition_key, as_select "
        "FROM system.tables WHERE database = {db:String} AND name = {name:String}",
        parameters={"db": database, "name": name},
    ).result_rows
    if not rows:
        return None
    engine, engine_full, sorting_key, primary_key, partition_key, as_select = rows[0]
    if engine in ("View", "MaterializedView"):
        select = str(as_select).replace(f"{database}.", "<db>.")
        return {"engine": engine, "query": select}
    if cluster and engine.startswith("Replicated"):
        engine = engine[len("Replicated") :]
    ttl = _TTL.search(engine_full or "")
    columns = client.query(
        "SELECT name, type, default_kind, default_expression FROM system.columns "
        "WHERE database = {db:String} AND table = {name:String} ORDER BY position",
        parameters={"db": database, "name": name},
    ).result_rows
    return {
        "engine": engine,
        "sorting_key": sorting_key,
        "primary_key": primary_key,
        "partition_key": partition_key,
        "ttl": ttl.group(1) if ttl else "",
        "columns": [" ".join(str(part) for part in col if part).strip() for col in columns],
    }


def diff(expected: dict[str, Any] | None, live: dict[str, Any] | None) -> list[str]:
    """Readable differences, one line each (`-` expected from sql/, `+` found live)."""
    if expected is None:
        return ["object is not declared in sql/clickhouse/"]
    if live is None:
        return ["object is missing from the database (materialize its asset to create it)"]
    lines: list[str] = []
    for key in expected:
        want, have = expected[key], live.get(key)
        if want == have:
            continue
        if key == "columns" and have is not None:
            for column in want:
                if column not in have:
                    lines.append(f"- column {column}")
            for column in have:
                if column not in want:
                    lines.append(f"+ column {column}")
            if not lines and want != have:
                lines.append(f"~ column order: expected {want}, found {have}")
        else:
            lines.append(f"- {key}: {want}")
            lines.append(f"+ {key}: {have}")
    return lines


def expected_descriptions(
    client: Client, database: str, objects: Iterable[SqlObject], universe: Iterable[SqlObject] | None = None
) -> dict[str, dict[str, Any]]:
    """Build every object (plus migrations) in a scratch database and describe the requested ones.

    The whole `universe` (default: all of sql/clickhouse/) is built, since views need their sources.
    """
    objects = list(objects)
    everything = list(universe) if universe is not None else list(load_objects())
    everything += [o for o in objects if o not in everything]
    scratch = f"{database}__expected_{uuid.uuid4().hex[:8]}"
    renderer = Renderer(scratch)
    client.command(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(scratch)}")
    try:
        for obj in everything:
            for statement in renderer.render(obj.template):
                client.command(statement)
            for migration in obj.migrations:
                for statement in renderer.render(migration.template):
                    client.command(statement)
        result = {}
        for obj in objects:
            described = describe(client, scratch, obj.name)
            assert described is not None, f"{obj.name} was not created from {obj.path}"
            result[obj.name] = described
        return result
    finally:
        client.command(f"DROP DATABASE IF EXISTS {quote_identifier(scratch)} SYNC")
