"""A run's results on disk: what grows with the answers stays out of memory.

Each shard writes the text of its results (the answers, and the batch ids) to a
Parquet file of its own as soon as it has collected them (results read from the result
cache are not written again: the spool reads the cache's file), and keeps in memory
only what the run decides with: custom_id, status, error, tokens, and where the
row's text is (``_file``, ``_row``). The output is then written a chunk of rows
at a time, each chunk reading back the texts it needs. So a run's memory does not
grow with the size of its answers.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections import OrderedDict
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tablebatch.jobs.take import single

SPOOLED = ("answer", "batch_id")  # the columns that live on disk
CACHE_BYTES = 256 * 2**20  # the texts kept in memory while the output is written
OPEN_FILES = 256  # files referred to (kept open) at most; beyond, their texts are written


class Spool:
    """A folder of result files, written by shards in any thread, read by the writer."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder  # made by the first ``put``
        self._lock = threading.Lock()
        self._next = 0
        self._cache: OrderedDict[int, pa.Table] = OrderedDict()
        self._cached_bytes = 0
        self._sources: dict[int, pq.ParquetFile] = {}  # files referred to, not written

    def put(self, results: pa.Table) -> pa.Table:
        """Write the text columns of ``results`` to a file; the other columns, with
        ``_file`` and ``_row`` saying where each row's text is."""
        with self._lock:
            number = self._number()
            self.folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(results.select(list(SPOOLED)), self._path(number))
        return _slim(results, number)

    def refer(self, path: Path, results: pa.Table) -> pa.Table:
        """``put`` for results read whole from the Parquet file ``path`` (the result
        cache's), whose text columns are there already: nothing is written, the file is
        read again when the output is. It is opened now, so that it is the file read even
        if it is removed or replaced meanwhile; past ``OPEN_FILES`` open, written as ``put``."""
        with self._lock:
            source = None if len(self._sources) >= OPEN_FILES else _opened(path)
            if source is not None:
                number = self._number()
                self._sources[number] = source
        if source is None:
            return self.put(results)
        return _slim(results, number)

    def _number(self) -> int:
        number = self._next
        self._next += 1
        return number

    def take(self, files: pa.Array, rows: pa.Array, column: str) -> pa.Array:
        """``column`` of the results at ``(files[i], rows[i])``; null where the file is.

        Rows sorted by file, one take per file, then one take back into order: linear in
        the rows however many files they come from (a mask per file over the whole chunk
        made a million rows from a hundred files cost seconds)."""
        order = pc.array_sort_indices(files, null_placement="at_end")  # by file, nulls last
        valid = len(files) - files.null_count
        if not valid:
            return pa.nulls(len(files), pa.string())
        runs = pc.run_end_encode(files.take(order.slice(0, valid)))
        wanted = rows.take(order.slice(0, valid))
        parts, start = [], 0
        for end, number in zip(runs.run_ends.to_pylist(), runs.values.to_pylist(), strict=True):
            values = self._read(number)[column].take(wanted.slice(start, end - start))
            parts.extend(chunk.cast(pa.string()) for chunk in values.chunks)
            start = end
        values = pa.concat_arrays(parts)
        back = pc.array_sort_indices(order)  # where each row's value is among ``values``
        return values.take(pc.if_else(pc.less(back, valid), back, None))

    def _read(self, number: int) -> pa.Table:
        with self._lock:
            if number in self._cache:
                self._cache.move_to_end(number)
                return self._cache[number]
        # a file's rows share one batch id or a few: kept once (a million rows' ids were
        # 30 MB of the cache), made text again a chunk of output rows at a time
        source = self._sources.get(number)
        if source is not None:
            table = source.read(columns=list(SPOOLED), use_threads=False)
        else:
            table = pq.read_table(self._path(number), read_dictionary=["batch_id"])
        with self._lock:
            if number not in self._cache:
                self._cache[number] = table
                self._cached_bytes += table.nbytes
            # the output is written in input order, and each chunk of it needs a row or more
            # of every file: all of them stay in memory when they fit (each read once), the
            # least recently used go first when they do not
            while self._cached_bytes > CACHE_BYTES and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                self._cached_bytes -= old.nbytes
        return table

    def _path(self, number: int) -> Path:
        return self.folder / f"results-{number:06d}.parquet"

    def forget(self) -> None:
        """Drop the texts kept in memory (the output is written: none is read again)."""
        with self._lock:
            self._cache.clear()
            self._cached_bytes = 0

    def remove(self) -> None:
        """Delete the folder and its files (the output holds the answers now), and its
        parent if that is left empty."""
        self._cache.clear()
        self._cached_bytes = 0
        for source in self._sources.values():
            source.close()
        self._sources.clear()
        shutil.rmtree(self.folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.folder.parent.rmdir()


def _opened(path: Path) -> pq.ParquetFile | None:
    """The Parquet file at ``path``, open, if it holds the text columns (else None)."""
    try:
        handle = pa.OSFile(str(path))
    except (OSError, pa.ArrowException):
        return None
    try:
        names = pq.read_schema(handle).names
        if set(SPOOLED) <= set(names):
            return pq.ParquetFile(handle, read_dictionary=["batch_id"])
    except (OSError, pa.ArrowException):
        pass
    handle.close()
    return None


def _slim(results: pa.Table, number: int) -> pa.Table:
    """``results`` without their text columns, with where those are: file and row."""
    n = results.num_rows
    slim = results.drop_columns(list(SPOOLED))
    slim = slim.append_column("_file", pa.array([number] * n, pa.int32()))
    return slim.append_column("_row", pa.array(range(n), pa.int32()))


def text_column(results: pa.Table, column: str, spool: Spool | None) -> pa.Array:
    """A text column of result rows: in the table, or read back from the spool."""
    if column in results.column_names:
        values = results[column]
        return single(values)
    if spool is None:
        raise ValueError(f"the results have no {column!r} column and no spool to read it from")
    files = single(results["_file"])
    rows = single(results["_row"])
    return spool.take(files, rows, column)
