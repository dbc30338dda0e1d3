"""Which requests the local ClickHouse server answers, and how often: where a platform's fixed costs hide.

With NOVA_CLICKHOUSE_QUERY_STATS=<file>, the server counts requests by the shape of their SQL
(literals and numbers folded) and the milliseconds they took until their answer started, and
appends one JSON line per minute to the file: the window, and each shape's
`[shape, count, ms]`, the most time first (a shape's time, not its count, is what costs the
server's cores). Off by default (two dictionary updates per request when on).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path

import orjson

LITERALS = re.compile(r"'(?:[^'\\]|\\.)*'|\b\d+(?:\.\d+)?\b|\{[a-zA-Z_][a-zA-Z0-9_]*:[^}]*\}")
SPACES = re.compile(r"\s+")


def shape(sql: str, insert_format: str = "") -> str:
    """A query's shape: its first 160 characters, literals and parameters folded, spaces squeezed."""
    text = SPACES.sub(" ", LITERALS.sub("?", sql[:400])).strip()[:160]
    return f"{text} FORMAT {insert_format}" if insert_format else text


class QueryStats:
    """Request counts per shape, written out once per window (nothing kept between windows)."""

    def __init__(self, path: str, window_s: float = 60.0) -> None:
        self.path = Path(path) if path else None
        self.window_s = window_s
        self.counts: Counter[str] = Counter()
        self.ms: dict[str, float] = {}
        self.started = time.time()

    def record(self, sql: str, insert_format: str = "") -> str:
        """Count a request; its shape ("" when off) goes back to `took` with its time."""
        if self.path is None:
            return ""
        key = shape(sql, insert_format)
        self.counts[key] += 1
        self.ms.setdefault(key, 0.0)  # listed even if it never answers
        return key

    def took(self, key: str, seconds: float) -> None:
        if key:
            self.ms[key] = self.ms.get(key, 0.0) + seconds * 1000

    def maybe_flush(self, force: bool = False) -> None:
        if self.path is None or not (force or time.time() - self.started >= self.window_s):
            return
        now = time.time()
        line = {
            "from": round(self.started, 1),
            "to": round(now, 1),
            "requests": sum(self.counts.values()),
            "per_second": round(sum(self.counts.values()) / max(1e-9, now - self.started), 2),
            "shapes": [
                [key, self.counts[key], round(ms, 1)] for key, ms in sorted(self.ms.items(), key=lambda kv: -kv[1])[:40]
            ],
        }
        with self.path.open("ab") as handle:
            handle.write(orjson.dumps(line) + b"\n")
        self.counts, self.ms = Counter(), {}
        self.started = now
