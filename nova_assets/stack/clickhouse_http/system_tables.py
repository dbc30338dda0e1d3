"""`SHOW CREATE TABLE system.<name>` as a ClickHouse server answers it.

chDB attaches its system tables without a CREATE statement (`There is no metadata of table
tables in database system`), where a server builds one from the table's columns; clients that
browse a server (DBeaver, Grafana, clickhouse-connect's SQLAlchemy reflection) ask for it. When
the engine says so, the same answer is built from `system.tables` and `system.columns`
(`sql/queries/show_create_system_table.sql`), in the client's format.
"""

from __future__ import annotations

import re
from functools import cache

from nova_assets.core.schema.sql_files import SQL_ROOT

SHOW_CREATE_SYSTEM = re.compile(
    r"^\s*SHOW\s+CREATE\s+(?:TABLE\s+)?(?:`system`|system)\s*\.\s*"
    r"(?:`((?:[^`\\]|\\.)+)`|([A-Za-z_][A-Za-z0-9_]*))\s*;?\s*$",
    re.IGNORECASE,
)
EXISTS = "SELECT count() FROM system.tables WHERE database = 'system' AND name = {table:String}"


@cache
def statement_sql() -> str:
    return (SQL_ROOT / "queries" / "show_create_system_table.sql").read_text()


def show_create_table(sql: str) -> str | None:
    """The system table a `SHOW CREATE [TABLE] system.<name>` statement asks for, else None."""
    match = SHOW_CREATE_SYSTEM.match(sql)
    if match is None:
        return None
    quoted, plain = match.groups()
    return re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else plain
