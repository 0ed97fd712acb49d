"""Reading a job's output table for its report: only the columns a chart needs, streamed a
batch of rows at a time, so that a million-row output costs seconds and little memory.

Parquet outputs are read a row group at a time (only the row groups holding the rows a
table shows, for those), CSV outputs with ``pyarrow.csv.open_csv``; CSV columns get the
output schema's types, so a column whose first rows are empty is not guessed wrong.
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
    "chrf": pa.float64(),
    "bleu": pa.float64(),
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
            try:
                meta = pq.ParquetFile(path).metadata
            except (pa.ArrowException, OSError) as exc:
                raise ReportInputError(f"{path}: not a readable Parquet file ({exc})") from exc
            return cls(path, meta.schema.to_arrow_schema().names, meta.num_rows)
        if not path.endswith(".csv"):
            raise ReportInputError(f"{path}: not a .parquet or .csv output table")
        with open(path, newline="", encoding="utf-8") as handle:
            names = next(csv.reader(handle), [])
        table = cls(path, names, 0, _csv=True)
        table.num_rows = (
            num_rows if num_rows is not None else sum(b.num_rows for b in table.batches(names[:1]))
        )
        return table

    def has(self, *names: str) -> bool:
        """Whether every one of these columns is in the table."""
        return all(n in self.names for n in names)

    def batches(
        self, columns: Sequence[str], row_groups: Sequence[int] | None = None
    ) -> Iterator[pa.RecordBatch]:
        """The table a batch of rows at a time, with only ``columns`` (those it has); of a
        Parquet file, only ``row_groups`` when given."""
        wanted = [c for c in dict.fromkeys(columns) if c in self.names]
        if self._csv:
            options = _csv_options(wanted, self.names)
            yield from pacsv.open_csv(self.path, convert_options=options)
        else:
            parquet = pq.ParquetFile(self.path)
            groups = range(parquet.num_row_groups) if row_groups is None else row_groups
            for group in groups:  # a row group at a time: its buffers are freed before the next
                table = parquet.read_row_group(group, columns=wanted, use_threads=False)
                yield from table.to_batches(BATCH_ROWS)

    def _group_starts(self) -> list[int]:
        """The first row of each Parquet row group, and the row count at the end."""
        meta = pq.ParquetFile(self.path).metadata
        starts = [0]
        for group in range(meta.num_row_groups):
            starts.append(starts[-1] + meta.row_group(group).num_rows)
        return starts

    def read(self, columns: Sequence[str]) -> pa.Table:
        """The whole of some columns (keep them few and small: numbers, short labels)."""
        wanted = [c for c in dict.fromkeys(columns) if c in self.names]
        if not self._csv:
            return pq.read_table(self.path, columns=wanted)
        batches = list(self.batches(wanted))
        if not batches:
            return _concat([], wanted, self.names)
        return pa.Table.from_batches(batches)

    def take(self, indices: Sequence[int], columns: Sequence[str]) -> pa.Table:
        """The rows at these positions (in order), with only ``columns``; of a Parquet file
        only the row groups that hold them are read."""
        order = np.unique(np.asarray(indices, dtype=np.int64))
        parts: list[pa.Table] = []
        if self._csv:
            pieces = [(0, self.batches(columns))]
        else:
            starts = self._group_starts()
            groups = np.unique(np.searchsorted(starts, order, side="right") - 1)
            pieces = [(starts[g], self.batches(columns, [int(g)])) for g in groups]
        for start, batches in pieces:
            for batch in batches:
                end = start + batch.num_rows
                lo, hi = np.searchsorted(order, start), np.searchsorted(order, end)
                if hi > lo:
                    local = pa.array(order[lo:hi] - start)
                    parts.append(pa.Table.from_batches([batch]).take(local))
                start = end
        return _concat(parts, columns, self.names)

    def positions(
        self, where: Callable[[pa.RecordBatch], pa.Array], needs: Sequence[str], limit: int
    ) -> tuple[list[int], int]:
        """The positions of the first ``limit`` rows for which ``where`` (of a batch with
        the ``needs`` columns) is true, and how many rows it is true for in all."""
        found: list[int] = []
        total = 0
        start = 0
        for batch in self.batches(needs):
            hits = pc.indices_nonzero(pc.fill_null(where(batch), False)).to_numpy()
            total += int(hits.size)
            if len(found) < limit:
                found.extend(int(h) + start for h in hits[: limit - len(found)])
            start += batch.num_rows
        return found, total

    def first_where(
        self,
        where: Callable[[pa.RecordBatch], pa.Array],
        needs: Sequence[str],
        columns: Sequence[str],
        limit: int,
    ) -> pa.Table:
        """The first ``limit`` rows (in order) for which ``where`` is true, with ``columns``:
        only the ``needs`` columns are read for every row."""
        found, _ = self.positions(where, needs, limit)
        return self.take(found, columns)

    def sample(
        self, size: int, columns: Sequence[str], seed: int = 0, groups: int = 3
    ) -> tuple[pa.Table, str]:
        """Up to ``size`` rows drawn at random (the same every time), with ``columns``, and
        how they were drawn. Of a Parquet file with many row groups, the rows are drawn from
        ``groups`` row groups drawn at random, so that only those are read."""
        if self._csv or self.num_rows <= size:
            picked = sample_indices(self.num_rows, size, seed)
            how = f"{len(picked):,} of {self.num_rows:,} rows, drawn at random"
            return self.take(picked, columns), how
        starts = self._group_starts()
        count = len(starts) - 1
        chosen = sorted(random.Random(seed).sample(range(count), min(groups, count)))
        pool = [i for g in chosen for i in range(starts[g], starts[g + 1])]
        picked = sorted(random.Random(seed).sample(pool, min(size, len(pool))))
        how = f"{len(picked):,} of {self.num_rows:,} rows, drawn at random"
        if len(chosen) < count:
            how += f" from {len(chosen)} of its {count} row groups (drawn at random)"
        return self.take(picked, columns), how


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
