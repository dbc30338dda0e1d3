"""Small result sets as Dagster table metadata: what people compare side by side, as DataFrames.

Figures that change from run to run stay numeric metadata (the UI plots them); tables hold what
is read across: strategies against each other, a sample of a feed, a sample of bad messages.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import dagster as dg
import numpy as np

if TYPE_CHECKING:  # pandas loads lazily: ~0.4 s of CPU at every run's start, for a few tables of metadata
    import pandas as pd

_KINDS = {"i": "int", "u": "int", "f": "float", "b": "bool"}


def _cell(value: Any) -> str | int | float | bool | None:
    """A JSON-safe table cell: numpy scalars unwrapped, NaN as empty, anything else as text."""
    if value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes):
        return escape_bytes(value)
    return str(value)


def frame(data: Any, columns: list[str] | None = None) -> pd.DataFrame:
    """A DataFrame; pandas is imported on first use (~0.4 s), so a run that builds no table never pays it."""
    import pandas  # lazy, see above

    return pandas.DataFrame(data, columns=columns)


def table(frame: pd.DataFrame, descriptions: dict[str, str] | None = None) -> dg.TableMetadataValue:
    """A DataFrame as a typed Dagster table (`dg.MetadataValue.table` with its `TableSchema`)."""
    notes = descriptions or {}
    columns = [
        dg.TableColumn(name=str(name), type=_KINDS.get(frame[name].dtype.kind, "string"), description=notes.get(name))
        for name in frame.columns
    ]
    records = [dg.TableRecord({str(k): _cell(v) for k, v in row.items()}) for row in frame.to_dict("records")]
    return dg.MetadataValue.table(records=records, schema=dg.TableSchema(columns=columns))


def escape_bytes(raw: bytes | str, limit: int = 200) -> str:
    """The first `limit` bytes as printable ASCII (`\\xNN`, `\\n`, `\\\\`): no byte can break a page."""
    data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
    return data[:limit].decode("latin-1").encode("unicode_escape").decode("ascii")
