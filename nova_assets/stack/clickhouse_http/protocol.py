"""What a request asks for, read the way ClickHouse's HTTP interface reads it.

Binary-safe: the URL's parameters and the body stay bytes until their use is known, so a query
or a bound parameter holding bytes that are not UTF-8 (a Parquet blob) reaches the engine intact.
"""

from __future__ import annotations

import re
import urllib.parse
import uuid
from dataclasses import dataclass, field

from nova_assets.stack.clickhouse_http.errors import SYNTAX_ERROR, UNKNOWN_SETTING, ClickHouseError

#: URL parameters that steer the HTTP layer, not the query (everything else unknown is a setting)
TRANSPORT_PARAMS = frozenset(
    {
        "query", "database", "default_format", "user", "password", "query_id", "quota_key",
        "session_id", "session_timeout", "session_check", "compress", "decompress",
        "enable_http_compression", "http_zlib_compression_level", "send_progress_in_http_headers",
        "http_headers_progress_interval_ms", "wait_end_of_query", "buffer_size", "http_response_buffer_size",
        "client_protocol_version", "add_http_cors_header", "cancel_http_readonly_queries_on_client_close",
        "http_write_exception_in_output_format", "stacktrace", "role", "close_session",
    }
)  # fmt: skip
SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TRAILING_FORMAT = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.IGNORECASE)
#: `[WITH ...] INSERT INTO ... FORMAT X` at the head of a body, its data after it
INSERT_HEAD = re.compile(
    rb"^\s*(?:WITH\b.*?)?INSERT\s+INTO\b.*?\bFORMAT\s+([A-Za-z0-9_]+)[ \t]*(?:\r?\n)?", re.IGNORECASE | re.DOTALL
)
FIRST_WORD = re.compile(r"^\s*(?:--[^\n]*\n\s*|/\*.*?\*/\s*)*([A-Za-z]+)", re.DOTALL)
QUOTED = re.compile(
    r"'(?:[^'\\]|\\.)*'|`(?:[^`\\]|\\.)*`|\"(?:[^\"\\]|\\.)*\"|--[^\n]*|/\*.*?\*/", re.DOTALL
)  # string literals, quoted names and comments: none of them can start a statement
TOP_INSERT = re.compile(r"\bINSERT\s+INTO\b", re.IGNORECASE)
TEMPORARY = re.compile(r"\bTEMPORARY\b", re.IGNORECASE)
WRITE_STATEMENTS = frozenset(
    {
        "insert", "create", "drop", "alter", "truncate", "delete", "update", "rename", "optimize", "system",
        "grant", "revoke", "kill", "attach", "detach", "exchange", "undrop", "backup", "restore", "set", "use",
    }
)  # fmt: skip
#: statements that answer with a result set: only these get X-ClickHouse-Format (a command gets a summary)
RESULT_STATEMENTS = frozenset({"select", "with", "show", "describe", "desc", "exists", "explain", "check", "values"})


def parse_query_string(raw: bytes) -> list[tuple[str, bytes]]:
    """URL parameters as (name, raw bytes of the value): percent-decoding without a charset."""
    pairs: list[tuple[str, bytes]] = []
    for part in raw.split(b"&"):
        if not part:
            continue
        name, _, value = part.partition(b"=")
        key = urllib.parse.unquote_to_bytes(name.replace(b"+", b" ")).decode("utf-8", "replace")
        pairs.append((key, urllib.parse.unquote_to_bytes(value.replace(b"+", b" "))))
    return pairs


def text(value: bytes) -> str:
    """A value that is text to ClickHouse (names, settings): UTF-8, bad bytes replaced."""
    return value.decode("utf-8", "replace")


def sql_text(value: bytes) -> str:
    """SQL keeps every byte: bytes that are not UTF-8 ride along as surrogates until `engine_sql`."""
    return value.decode("utf-8", "surrogateescape")


def engine_sql(sql: str) -> str | bytes:
    """What chDB is given: the text, or its exact bytes when it holds bytes that are not UTF-8."""
    try:
        sql.encode("utf-8")
        return sql
    except UnicodeEncodeError:
        return sql.encode("utf-8", "surrogateescape")


def param_value(value: bytes) -> str:
    """A bound parameter: ClickHouse reads it as an escaped string, so bytes that are not UTF-8 go as \\xNN."""
    return value.decode("utf-8", "backslashreplace")


def statement(sql: str) -> str:
    match = FIRST_WORD.match(sql)
    return match.group(1).lower() if match else ""


def is_insert(sql: str) -> bool:
    """`INSERT ...`, or `WITH ... INSERT ...` (string literals cannot fake one)."""
    first = statement(sql)
    if first == "insert":
        return True
    return first == "with" and TOP_INSERT.search(QUOTED.sub("''", sql)) is not None


def has_result(sql: str) -> bool:
    first = statement(sql)
    return first in RESULT_STATEMENTS and not (first == "with" and is_insert(sql))


@dataclass
class Query:
    """What a request asks for, parsed from its URL, headers and body head."""

    sql: str
    fmt: str
    database: str  # "" = the session's (or the server's default)
    settings: dict[str, str]
    params: dict[str, str]
    query_id: str
    insert_format: str = ""  # set when the body (after `head`) is the data of an INSERT
    head: bytes = b""
    args: dict[str, str] = field(default_factory=dict)  # the transport parameters, as text

    @property
    def statement(self) -> str:
        return statement(self.sql)

    def flag(self, name: str) -> bool:
        return self.args.get(name, "").lower() in ("1", "true")


def parse(
    args: list[tuple[str, bytes]],
    body_head: bytes,
    body_is_data: bool,
    header_database: str = "",
    reserved: frozenset[str] = frozenset(),
) -> Query:
    """A request's query; `reserved` names parameters of external tables (not settings)."""
    values: dict[str, bytes] = {}
    for name, value in args:
        values[name] = value
    sql = sql_text(values.get("query", b""))
    insert_format = ""
    head = b""
    if body_head and not body_is_data:
        match = INSERT_HEAD.match(body_head) if not sql else None
        if match is not None and not is_insert(sql_text(body_head[: match.start(1)])):
            match = None  # the INSERT was inside a string literal or a comment
        if match is not None:  # INSERT ... FORMAT X in the body, its data after it
            sql = sql_text(body_head[: match.start(1)]).rstrip()
            sql = re.sub(r"\s+FORMAT\s*$", "", sql, flags=re.IGNORECASE)
            insert_format = match.group(1).decode()
            head = body_head[match.end() :]
        else:
            sql += sql_text(body_head)
    elif body_is_data:
        trailing = TRAILING_FORMAT.search(sql)
        if trailing is None:
            raise ClickHouseError(SYNTAX_ERROR, "INSERT with data in the body needs a FORMAT clause", "SYNTAX_ERROR")
        insert_format = trailing.group(1)
        sql = sql[: trailing.start()].rstrip()
    if not sql.strip():
        raise ClickHouseError(SYNTAX_ERROR, "Empty query", "SYNTAX_ERROR")
    fmt = text(values.get("default_format", b"")) or "TabSeparated"
    if not insert_format:
        trailing = TRAILING_FORMAT.search(sql)
        if trailing is not None:
            fmt = trailing.group(1)
            sql = sql[: trailing.start()].rstrip().rstrip(";")
    settings: dict[str, str] = {}
    params: dict[str, str] = {}
    transport: dict[str, str] = {}
    for name, value in args:
        if name.startswith("param_"):
            params[name[6:]] = param_value(value)
        elif name in TRANSPORT_PARAMS:
            transport[name] = text(value)
        elif name not in reserved:
            if not SETTING_NAME.match(name):
                raise ClickHouseError(UNKNOWN_SETTING, f"Unknown setting '{name}'", "UNKNOWN_SETTING")
            settings[name] = text(value)
    return Query(
        sql=sql,
        fmt=fmt,
        database=transport.get("database") or header_database,
        settings=settings,
        params=params,
        query_id=transport.get("query_id") or str(uuid.uuid4()),
        insert_format=insert_format,
        head=head,
        args=transport,
    )


#: formats whose per-block output concatenates into one valid stream (chDB streams them block by block)
STREAMABLE = frozenset({"native", "tabseparated", "tsv", "csv", "rowbinary", "jsoneachrow", "jsoncompacteachrow"})
CONTENT_TYPES = {
    "tabseparated": "text/tab-separated-values; charset=UTF-8",
    "tsv": "text/tab-separated-values; charset=UTF-8",
    "tabseparatedwithnames": "text/tab-separated-values; charset=UTF-8",
    "csv": "text/csv; charset=UTF-8; header=absent",
    "csvwithnames": "text/csv; charset=UTF-8; header=present",
    "json": "application/json; charset=UTF-8",
    "jsoneachrow": "application/x-ndjson; charset=UTF-8",
    "jsoncompact": "application/json; charset=UTF-8",
    "pretty": "text/plain; charset=UTF-8",
}
