"""Rows of a chunked table taken chunk by chunk.

Arrow (26) takes from a chunked table or array by concatenating it whole first: a copy of
every column at each call. A job's table is chunked (a Parquet file's row groups, a CSV's
blocks, a run's shards of results), and it takes rows from it again and again (a shard's
prompts, a chunk of the output), so at a million reviews each call cost 0.85 s and 300 MB.
Here each chunk gives the rows it holds, and only those rows are put together.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import pairwise
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

Data = TypeVar("Data", pa.Table, pa.ChunkedArray, pa.Array)


def single(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``values`` as one array: a chunked array's only chunk as it is (``combine_chunks``
    copies even one chunk: 300 MB of a million texts), more chunks put together."""
    if isinstance(values, pa.Array):
        return values
    if values.num_chunks == 1:
        return values.chunk(0)
    return values.combine_chunks()


def chained(parts: Iterable[pa.Array | pa.ChunkedArray], kind: pa.DataType) -> pa.ChunkedArray:
    """The parts one after another, as one chunked array of their chunks (no copy). Not
    ``pa.chunked_array(parts)``: given chunked arrays, it converts them through Python
    objects (0.45 s for 900,000 ids)."""
    chunks: list[pa.Array] = []
    for part in parts:
        chunks.extend(part.chunks if isinstance(part, pa.ChunkedArray) else [part])
    return pa.chunked_array(chunks, kind)


def distinct(values: pa.Array | pa.ChunkedArray) -> bool:
    """Whether no value is there twice: by one sort (Arrow sorts a million short strings in
    ~0.05 s, where hashing them, as ``count_distinct`` does, takes ~0.3 s)."""
    n = len(values)
    if values.null_count > 1:  # null is a value too: twice is a repeat
        return False
    if n < 2:
        return True
    ordered = single(take(values, pc.sort_indices(values)))
    return not pc.any(pc.equal(ordered.slice(1), ordered.slice(0, n - 1))).as_py()


def take(data: Data, indices: pa.Array | pa.ChunkedArray) -> Data:
    """``data.take(indices)`` (a null index gives a null row), without concatenating
    ``data``."""
    if isinstance(indices, pa.ChunkedArray):
        indices = indices.combine_chunks()
    if isinstance(data, pa.Array):  # one chunk already
        return data.take(indices)
    chunks = data.to_batches() if isinstance(data, pa.Table) else data.chunks
    if len(chunks) <= 1:
        return data.take(indices)
    if indices.null_count:  # the rows of the valid indices, then the nulls put in between
        valid = pc.is_valid(indices)
        taken = take(data, indices.filter(valid))
        slot = pc.subtract(pc.cumulative_sum(pc.cast(valid, pa.int64())), 1)
        where = pc.if_else(valid, slot, pa.scalar(None, pa.int64()))
        single = taken.combine_chunks() if isinstance(taken, pa.Table) else taken
        return single.take(where)
    return _take_sorted(data, chunks, indices.to_numpy(zero_copy_only=False).astype(np.int64))


def _take_sorted(data: Data, chunks: list[Any], at: np.ndarray) -> Data:
    """The rows ``at`` (no nulls): each index is put with its chunk in one sort of the chunk
    numbers, each chunk gives its rows, and one take puts them back in order (none if the
    indices were already in chunk order, as a slice's are)."""
    ends = np.cumsum([len(chunk) for chunk in chunks])
    if len(at) and (at.min() < 0 or at.max() >= ends[-1]):
        raise IndexError(f"index out of bounds for {int(ends[-1])} rows")
    which = np.searchsorted(ends, at, side="right")
    order = np.argsort(which, kind="stable")
    bounds = np.searchsorted(which[order], np.arange(len(chunks) + 1))
    starts = np.concatenate([[0], ends[:-1]])
    parts = [
        chunks[k].take(pa.array(at[order[lo:hi]] - starts[k]))
        for k, (lo, hi) in enumerate(pairwise(bounds))
        if hi > lo
    ]
    if not parts:
        return data.slice(0, 0)
    if _in_order(order):  # the chunks' rows as they are: no copy to put them together
        if isinstance(data, pa.Table):
            return pa.Table.from_batches(parts, data.schema)
        return pa.chunked_array(parts, data.type)
    if isinstance(data, pa.Table):
        joined = pa.Table.from_batches(parts, data.schema).combine_chunks()
    else:
        joined = pa.concat_arrays(parts)
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    joined = joined.take(pa.array(back))
    return joined if isinstance(data, pa.Table) else pa.chunked_array([joined], data.type)


def _in_order(order: np.ndarray) -> bool:
    """Whether a permutation leaves everything in place."""
    return bool(len(order) < 2 or (np.diff(order) == 1).all())
