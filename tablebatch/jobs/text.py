"""A column as text: the one way a job reads a cell as a string (ids, prompts, references).

Strings and integers are cast in Arrow (no copy of a string column); other types go
through Python's ``str``, so that 1.0 stays "1.0" and NaN reads as empty.
"""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

BLANK = r"^[\s\p{Z}\x0b\x1c-\x1f\x85]*$"  # what str.strip() strips, in RE2

Column = pa.ChunkedArray | pa.Array


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def as_text(column: Column) -> Column:
    """A column as strings, nulls kept, chunks kept."""
    kind = column.type
    if pa.types.is_string(kind):
        return column
    if pa.types.is_large_string(kind) or pa.types.is_integer(kind) or pa.types.is_null(kind):
        return column.cast(pa.string())
    if pa.types.is_dictionary(kind) and pa.types.is_string(kind.value_type):
        return column.cast(pa.string())
    values = column.to_pylist()
    return pa.array([None if v is None else _text(v) for v in values], pa.string())


def text_values(column: Column) -> list[str]:
    """A column as Python text, nulls (and NaN) as empty strings."""
    return pc.fill_null(as_text(column), "").to_pylist()


def id_texts(column: Column) -> pa.Array:
    """Row ids as text (one string array): how they are named in custom_ids and errors."""
    ids = pc.fill_null(as_text(column), "")
    return ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids


def blank(texts: Column) -> Column:
    """Which texts are null or only whitespace (as ``str.strip`` sees it), without copying
    the texts."""
    return pc.fill_null(pc.match_substring_regex(texts, BLANK), True)
