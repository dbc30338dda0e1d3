"""The ClickHouse objects in `sql/clickhouse/`: parsing headers and rendering single-node or cluster DDL.

Each file holds one object and starts with `-- object:`, `-- kind:` and optional `-- depends:` /
`-- role:` lines. The body is a Jinja template; the helpers below are the only thing that differs
between a single node and a cluster (`NOVA_CLICKHOUSE_CLUSTER`): ON CLUSTER, Replicated engines,
`<name>_local` tables behind Distributed ones, and the deduplication window setting.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import jinja2

from nova_assets.core.identifiers import quote_identifier

SQL_ROOT = Path(__file__).resolve().parents[3] / "sql"
CLICKHOUSE_DIR = SQL_ROOT / "clickhouse"
POSTGRES_DIR = SQL_ROOT / "postgres"

_HEADER = re.compile(r"^--\s*(object|kind|depends|role|asset):\s*(.*?)\s*$")
_STATEMENT_END = re.compile(r";\s*(?:\n|$)")
KINDS = ("table", "materialized_view", "view")


def quote_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True)
class Migration:
    name: str
    object: str
    template: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.template.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SqlObject:
    """One ClickHouse object as declared in `sql/clickhouse/<nnn>_<name>.sql`."""

    name: str
    kind: str
    path: Path
    template: str
    depends: tuple[str, ...] = ()
    role: str = ""
    owner: str = ""  # a capability whose asset creates and fills this object (else a schema asset)
    description: str = ""
    migrations: tuple[Migration, ...] = field(default=())

    @property
    def is_table(self) -> bool:
        return self.kind == "table"


class Renderer:
    """Renders templates for one database, single node (cluster='') or a named cluster."""

    def __init__(self, database: str, cluster: str = "") -> None:
        self.database = database
        self.cluster = cluster
        self.env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)

    def local_name(self, name: str) -> str:
        """The name of the table that stores the data (`<name>_local` on a cluster)."""
        return f"{name}_local" if self.cluster else name

    def _engine(self, kind: str, *args: str) -> str:
        if not self.cluster:
            return f"{kind}({', '.join(args)})" if args else kind
        path = "'/clickhouse/tables/{shard}/{database}/{table}'"
        return f"Replicated{kind}({', '.join([path, quote_string('{replica}'), *args])})"

    def _distributed(self, name: str, sharding_key: str) -> str:
        if not self.cluster:
            return ""
        db = quote_identifier(self.database)
        cluster = quote_identifier(self.cluster)
        return (
            f"CREATE TABLE IF NOT EXISTS {db}.{name} ON CLUSTER {cluster} AS {db}.{self.local_name(name)}\n"
            f"ENGINE = Distributed({quote_string(self.cluster)}, {quote_string(self.database)}, "
            f"{quote_string(self.local_name(name))}, {sharding_key});"
        )

    def _dedup_window(self, size: int) -> str:
        setting = "replicated_deduplication_window" if self.cluster else "non_replicated_deduplication_window"
        return f"{setting} = {int(size)}"

    def render(self, template: str) -> list[str]:
        """The statements of a template, without comments-only fragments."""
        text = self.env.from_string(template).render(
            db=quote_identifier(self.database),
            on_cluster=f"ON CLUSTER {quote_identifier(self.cluster)}" if self.cluster else "",
            table=self.local_name,
            engine=self._engine,
            distributed=self._distributed,
            dedup_window=self._dedup_window,
        )
        statements = []
        for chunk in _STATEMENT_END.split(text):
            body = "\n".join(line for line in chunk.splitlines() if not line.strip().startswith("--")).strip()
            if body:
                statements.append(body)
        return statements


def _parse(path: Path) -> SqlObject:
    text = path.read_text()
    headers: dict[str, str] = {}
    description: list[str] = []
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        match = _HEADER.match(line)
        if match:
            headers[match.group(1)] = match.group(2)
        else:
            description.append(line.lstrip("- ").rstrip())
    if "object" not in headers or headers.get("kind") not in KINDS:
        raise ValueError(f"{path}: needs '-- object: <name>' and '-- kind: {'|'.join(KINDS)}' header lines")
    depends = tuple(d.strip() for d in headers.get("depends", "").split(",") if d.strip())
    return SqlObject(
        name=headers["object"],
        kind=headers["kind"],
        path=path,
        template=text,
        depends=depends,
        role=headers.get("role", ""),
        owner=headers.get("asset", ""),
        description=" ".join(description).strip(),
    )


@cache
def load_objects(directory: Path = CLICKHOUSE_DIR) -> tuple[SqlObject, ...]:
    """All objects in file order, each with its forward migrations (sql/clickhouse/migrations/)."""
    objects = [_parse(p) for p in sorted(directory.glob("*.sql"))]
    names = {o.name for o in objects}
    migrations: dict[str, list[Migration]] = {}
    for path in sorted((directory / "migrations").glob("*.sql")):
        text = path.read_text()
        match = re.search(r"^--\s*object:\s*(\S+)", text, re.MULTILINE)
        if not match or match.group(1) not in names:
            raise ValueError(f"{path}: a migration starts with '-- object: <one of {sorted(names)}>'")
        migrations.setdefault(match.group(1), []).append(Migration(path.stem, match.group(1), text))
    for obj in objects:
        unknown = [d for d in obj.depends if d not in names]
        if unknown:
            raise ValueError(f"{obj.path}: depends on unknown object(s) {unknown}")
    out = []
    for obj in objects:
        mine = tuple(migrations.get(obj.name, ()))
        # migrations are recorded in schema_migrations: it must exist before they run
        depends = obj.depends + (("schema_migrations",) if mine and "schema_migrations" not in obj.depends else ())
        out.append(SqlObject(**{**obj.__dict__, "migrations": mine, "depends": depends}))
    return tuple(out)


def postgres_statements(directory: Path = POSTGRES_DIR) -> list[str]:
    """The Nova app's source schema for Postgres, in file order (each file is idempotent)."""
    return [p.read_text() for p in sorted(directory.glob("*.sql"))]
