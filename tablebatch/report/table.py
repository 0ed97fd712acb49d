"""Reading a job's output table for its report: only the columns a chart needs, streamed a
batch of rows at a time, so that a million-row output costs seconds and little memory.

Parquet and CSV outputs are read the same way (``pyarrow.parquet.ParquetFile.iter_batches``
or ``pyarrow.csv.open_csv``); CSV columns get the output schema's types, so a column
whose first rows are empty is not guessed wrong.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

# the output columns a report reads that are not text (everything else is read as text)
TYPES = {
    "attempts": pa.int32(),
    "prompt_tokens": pa.int64(),
    "completion_tokens": pa.int64(),
    "rouge1": pa.float64(),
    "rouge2": pa.float64(),
    "rougeL": pa.float64(),
    "score": pa.float64(),
}
BATCH_ROWS = 65_536


class ReportInputError(ValueError):
    """The output table (or its report JSON) cannot be read; the message says what to do."""


@dataclass
class OutputTable:
    """A job's output table on disk: its column names and row count, read lazily."""

    path: str
    names: list[str]
    num_rows: int
    _csv: bool = field(default=False, repr=False)

    @classmethod
    def open(cls, path: str | Path, num_rows: int | None = None) -> OutputTable:
        """The table at ``path`` (.parquet or .csv); ``num_rows`` for a CSV, whose row count
        is not in a header (counted by streaming when not given)."""
        path = str(path)
        if not Path(path).exists():
            raise ReportInputError(f"{path}: no such output table; run the job first")
        if path.endswith(".parquet"):
            meta = pq.ParquetFile(path).metadata
            return cls(path, meta.schema.to_arrow_schema().names, meta.num_rows)
        if not path.endswith(".csv"):
            raise ReportInputError(f"{path}: not a .parquet or .csv output table")
        with open(path, newline="", encoding="utf-8") as handle:
            names = next(csv.reader(handle), [])
        table = cls(path, names, 0, _csv=True)
        table.num_rows = num_rows if num_rows is not None else sum(
            b.num_rows for b in table.batches(names[:1])
        )
        return table

    def has(self, *names: str) -> bool:
        """Whether every one of these columns is in the table."""
        return all(n in self.names for n in names)

    def batches(self, columns: Sequence[str]) -> Iterator[pa.RecordBatch]:
        """The table a batch of rows at a time, with only ``columns`` (those it has)."""
        wanted = [c for c in dict.fromkeys(columns) if c in self.names]
        if self._csv:
            options = _csv_options(wanted, self.names)
            yield from pacsv.open_csv(self.path, convert_options=options)
        else:
            yield from pq.ParquetFile(self.path).iter_batches(
                batch_size=BATCH_ROWS, columns=wanted
            )

    def read(self, columns: Sequence[str]) -> pa.Table:
        """The whole of some columns (keep them few and small: numbers, short labels)."""
        wanted = [c for c in dict.fromkeys(columns) if c in self.names]
        if not self._csv:
            return pq.read_table(self.path, columns=wanted)
        batches = list(self.batches(wanted))
        if not batches:
            return pa.table({c: pa.array([], TYPES.get(c, pa.string())) for c in wanted})
        return pa.Table.from_batches(batches)

    def take(self, indices: Sequence[int], columns: Sequence[str]) -> pa.Table:
        """The rows at these (sorted) positions, with only ``columns``."""
        order = pa.array(sorted(indices), pa.int64())
        parts: list[pa.Table] = []
        start = 0
        for batch in self.batches(columns):
            end = start + batch.num_rows
            lo, hi = _span(order, start, end)
            if hi > lo:
                local = pc.subtract(order.slice(lo, hi - lo), start)
                parts.append(pa.Table.from_batches([batch.take(local)]))
            start = end
        return _concat(parts, columns, self.names)

    def first_where(
        self,
        where: Callable[[pa.RecordBatch], pa.Array],
        needs: Sequence[str],
        columns: Sequence[str],
        limit: int,
    ) -> pa.Table:
        """The first ``limit`` rows (in order) for which ``where`` of a batch with the
        ``needs`` columns is true; with ``columns``."""
        parts: list[pa.Table] = []
        found = 0
        for batch in self.batches([*needs, *columns]):
            keep = pc.fill_null(where(batch), False)
            rows = pa.Table.from_batches([batch]).filter(keep)
            if rows.num_rows:
                parts.append(rows.slice(0, limit - found))
                found += min(rows.num_rows, limit - found)
            if found >= limit:
                break
        return _concat(parts, columns, self.names)


def _span(order: pa.Array, start: int, end: int) -> tuple[int, int]:
    """The positions in sorted ``order`` of the values in [start, end)."""
    values = order.to_numpy(zero_copy_only=False)
    return int(np.searchsorted(values, start)), int(np.searchsorted(values, end))


def _concat(parts: list[pa.Table], columns: Sequence[str], names: list[str]) -> pa.Table:
    wanted = [c for c in dict.fromkeys(columns) if c in names]
    if not parts:
        return pa.table({c: pa.array([], TYPES.get(c, pa.string())) for c in wanted})
    return pa.concat_tables(parts).select(wanted)


def _csv_options(columns: list[str], names: list[str]) -> pacsv.ConvertOptions:
    """Only ``columns``, every one as text but the output's numbers."""
    return pacsv.ConvertOptions(
        include_columns=columns,
        column_types={n: TYPES.get(n, pa.string()) for n in names},
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        auto_dict_encode=False,
    )


def sample_indices(num_rows: int, size: int, seed: int = 0) -> list[int]:
    """Up to ``size`` row positions drawn evenly at random (the same every time)."""
    if num_rows <= size:
        return list(range(num_rows))
    return sorted(random.Random(seed).sample(range(num_rows), size))
