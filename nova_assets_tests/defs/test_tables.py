"""Table metadata from DataFrames: typed columns, JSON-safe cells, bytes that cannot break a page."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nova_assets.defs.tables import escape_bytes, table


def test_schema_follows_the_dtypes_and_cells_are_plain() -> None:
    frame = pd.DataFrame(
        {"name": ["a", "b"], "n": np.array([1, 2], dtype=np.int64), "x": [0.5, float("nan")], "ok": [True, False]}
    )
    value = table(frame, {"x": "a ratio"})
    assert [(c.name, c.type) for c in value.schema.columns] == [
        ("name", "string"), ("n", "int"), ("x", "float"), ("ok", "bool")
    ]  # fmt: skip
    assert value.schema.columns[2].description == "a ratio"
    assert [r.data for r in value.records] == [
        {"name": "a", "n": 1, "x": 0.5, "ok": True},
        {"name": "b", "n": 2, "x": None, "ok": False},
    ]
    assert all(type(v) in (str, int, float, bool, type(None)) for r in value.records for v in r.data.values())


def test_hostile_bytes_are_escaped_and_bounded() -> None:
    nasty = b"\x00\x1b[31m<script>alert(1)</script>\xff\xfe\r\n" + "é😀".encode() + b"\\" + b"A" * 500
    text = escape_bytes(nasty)
    assert text.isascii() and text.isprintable()
    assert "<script>" in text  # shown as text, never as markup: the UI renders cells as text
    assert text.startswith("\\x00\\x1b[31m") and "\\xff\\xfe\\r\\n" in text and "\\\\" in text
    assert text.count("A") == 200 - len(nasty[: nasty.index(b"A")])
    assert escape_bytes("plain") == "plain"
