"""Reading and writing tables: local paths, globs and fsspec URLs, as Arrow.

CSV ids are read as strings (``007`` stays ``007``); every failure is a
``DataError`` naming the file and what to change. Writes are atomic: a
temporary file in the same folder, then a rename, so a crash never leaves half
a table where the output should be.
"""

from __future__ import annotations

import glob
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tablebatch.crash import crash_point
from tablebatch.jobs.errors import DataError

FORMATS = (".csv", ".parquet")


def use_jemalloc() -> None:
    """Make jemalloc Arrow's allocator, unless ``ARROW_DEFAULT_MEMORY_POOL`` names one or
    this pyarrow has none. Arrow's default (mimalloc) keeps most of what a step frees
    (a value_counts, a group_by, a Parquet read's buffers) as the process's memory; a
    million-row run (``benchmarks/incremental.py``) peaked at 1,270 MB RSS with it and
    1,060 MB with jemalloc, in the same time. Tables made before keep their allocator."""
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    try:
        pa.jemalloc_set_decay_ms(0)  # freed pages go back at once (reading 1M rows: -66 MB)
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:  # a pyarrow built without it (e.g. on Windows)
        return


use_jemalloc()  # on import: whatever reads a table first, a run or a test, uses it


def release_memory() -> None:
    """Give back to the system what Arrow's allocator keeps of the memory a step freed
    (it holds it for the next allocations): called after a step that frees much — a read,
    planning, a shard, a stage, the join. A few ms. Measured with mimalloc, before
    ``use_jemalloc``: 170 MB of RSS after planning a million rows, held to the end of the run."""
    pa.default_memory_pool().release_unused()


def resolve(path: str, root: Path) -> str:
    """``path`` made absolute against ``root`` (URLs are left as they are)."""
    if "://" in path:
        return path
    expanded = Path(os.path.expanduser(path))
    return str(expanded if expanded.is_absolute() else root / expanded)


def _format(path: str) -> str:
    suffix = Path(path.split("?")[0]).suffix.lower()
    if suffix not in FORMATS:
        raise DataError(f"{path}: unknown format {suffix or '(no suffix)'}; use .csv or .parquet")
    return suffix


def _opener(path: str) -> Callable[[], Any]:
    """A function that opens ``path`` for reading anew each time (a context manager)."""
    if "://" in path:
        import fsspec

        return lambda: fsspec.open(path, "rb")
    return lambda: pa.OSFile(path, "r")  # Arrow's own file: read without the GIL


# A Parquet file is read PARQUET_BATCH rows at a time from pages streamed through a
# PARQUET_BUFFER-byte buffer, not a row group at a time: a row group is decoded whole
# (a file written with pyarrow's defaults is one row group up to 1,048,576 rows), so the
# peak was the table and its decoding buffers again. A 1,000,000-row table of reviews
# (324 MB in Arrow), one row group: peak RSS 961 -> 531 MB, 1.0 -> 0.2 s.
PARQUET_BATCH = 65_536
PARQUET_BUFFER = 1 << 20


def _read_one(path: str, string_columns: list[str]) -> pa.Table:
    suffix = _format(path)
    try:
        return _read_stream(_opener(path), suffix, path, string_columns)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; check input.path") from None
    except DataError:
        raise
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, UnicodeDecodeError, ValueError) as exc:
        kind = "CSV" if suffix == ".csv" else "Parquet"
        text = str(exc).strip()
        hint = ""
        if "UTF8" in text or "utf-8" in text.lower():
            hint = " Save the file as UTF-8."
        elif "Expected" in text and "columns" in text:
            hint = " Every line needs as many fields as the header; quote fields with commas."
        elif "Empty CSV" in text:
            hint = " The file is empty: it needs a header line and rows."
        elif kind == "Parquet":
            hint = " Check that it is a Parquet file (or use a .csv name for CSV)."
        raise DataError(f"{path}: not a readable {kind} file: {text}.{hint}") from None


def _read_stream(
    opener: Callable[[], Any], suffix: str, path: str, string_columns: list[str]
) -> pa.Table:
    if suffix == ".parquet":  # a batch of rows at a time, pages streamed: see PARQUET_BATCH
        with opener() as handle:
            parquet = pq.ParquetFile(handle, pre_buffer=False, buffer_size=PARQUET_BUFFER)
            batches = list(parquet.iter_batches(batch_size=PARQUET_BATCH))
            table = pa.Table.from_batches(batches, parquet.schema_arrow)
        release_memory()  # the decoding buffers
        return table
    header = _csv_header(opener) if string_columns else []
    types = {c: pa.string() for c in string_columns if c in header}
    with opener() as handle:
        table = pacsv.read_csv(handle, convert_options=pacsv.ConvertOptions(column_types=types))
    binary = [f.name for f in table.schema if pa.types.is_binary(f.type)]
    if binary:  # Arrow reads text that is not UTF-8 as bytes
        raise DataError(
            f"{path}: column(s) {', '.join(binary)} are not valid UTF-8 text. Save the file "
            "as UTF-8."
        )
    return table


def _csv_header(opener: Callable[[], Any]) -> list[str]:
    """A CSV's column names, from its first line alone, read in this thread. (A streaming
    reader reads ahead in the background, and some filesystems, fsspec's memory one, hand
    every ``open`` the same file object: the look-ahead tore the rows of the real read.)"""
    first = b""
    with opener() as handle:
        while b"\n" not in first:
            block = handle.read(1 << 16)
            if not block:
                break
            first += block
    line = first.split(b"\n", 1)[0]
    if not line.strip():
        return []
    return pacsv.read_csv(pa.BufferReader(line + b"\n")).schema.names


_handed: dict[tuple[Any, ...], pa.Table] = {}  # at most one table, until it is read


def file_key(path: str, string_columns: list[str] | None) -> tuple[Any, ...] | None:
    """What tells a local file's content apart (None for a URL, a glob, no such file):
    taken before a read, it says whether the file is still the one read (``hand_over``)."""
    if "://" in path or any(c in path for c in "*?["):
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None
    columns = tuple(string_columns or [])
    times = (stat.st_mtime_ns, stat.st_ctime_ns)
    return (os.path.abspath(path), columns, stat.st_ino, stat.st_size, *times)


def hand_over(
    path: str, string_columns: list[str] | None, table: pa.Table, read_key: tuple[Any, ...] | None
) -> None:
    """Keep ``table``, read from the local file ``path`` when its ``file_key`` was
    ``read_key``, for this process's next ``read_table`` of that file while it is
    unchanged (same size, times and inode, before the read as now): the run's flow then
    takes the table its command checked before Prefect started, not a second read of it.
    A file that changed during or since that read is read again. Held once, until the
    next ``read_table`` (or hand-over)."""
    key = file_key(path, string_columns)
    _handed.clear()
    if key is not None and key == read_key:
        _handed[key] = table


def read_table(path: str, string_columns: list[str] | None = None) -> pa.Table:
    """Read a CSV/Parquet file, a glob of them, or an fsspec URL into one table (a table
    handed over for the same unchanged file: that one, once)."""
    if _handed:  # the next read takes it or drops it: never held for the whole run
        key = file_key(path, string_columns)
        handed = _handed.pop(key, None) if key is not None else None
        _handed.clear()
        if handed is not None:
            return handed
    paths = [path]
    if "://" not in path and any(c in path for c in "*?["):
        paths = sorted(glob.glob(path))
        if not paths:
            raise DataError(f"{path}: the pattern matches no file; check input.path")
    tables = [_read_one(p, list(string_columns or [])) for p in paths]
    if len(tables) == 1:
        return tables[0]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataError(f"{path}: the files do not share one schema: {exc}") from None


def write_table(table: pa.Table, path: str) -> None:
    """Write ``table`` to ``path`` (.csv or .parquet), atomically."""
    with table_writer(path, table.schema) as write:
        write(table)


@contextmanager
def table_writer(
    path: str, schema: pa.Schema, first: pa.Table | None = None
) -> Iterator[Callable[[pa.Table], None]]:
    """A function that appends tables of ``schema`` to ``path`` (.csv or .parquet), a
    chunk at a time; the file appears whole when the block ends (atomically, for a local
    path), and not at all if it fails. ``first``: the first chunk, to choose which Parquet
    columns are worth a dictionary (``dictionary_columns``)."""
    suffix = _format(path)
    dictionary = dictionary_columns(first) if first is not None else True
    if "://" in path:
        import fsspec

        with (
            fsspec.open(path, "wb") as handle,
            _writer(handle, suffix, schema, dictionary) as write,
        ):
            yield write
        return
    folder = Path(path).parent
    folder.mkdir(parents=True, exist_ok=True)
    # not mkstemp: its 0600 would keep teammates from reading the output; a new file of
    # 0666 gets what the user's umask allows, as every other file written does
    tmp = str(folder / f".tmp-{uuid.uuid4().hex}{suffix}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle, _writer(handle, suffix, schema, dictionary) as write:
            yield write
        crash_point("writing")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def dictionary_columns(chunk: pa.Table) -> list[str]:
    """The columns of ``chunk`` that repeat their values (at most one distinct value in
    two): a Parquet dictionary pays for them. Trying one on columns of distinct texts (a
    review, an id) costs a hash table per page until Parquet gives up on it: writing a
    million reviews took 0.91 s with a dictionary tried on every column, 0.56 s without
    it on those, and the writer's buffers held less."""
    n = max(chunk.num_rows, 1)
    return [
        name
        for name, column in zip(chunk.column_names, chunk.columns, strict=True)
        if not pa.types.is_nested(column.type) and pc.count_distinct(column).as_py() * 2 <= n
    ]


@contextmanager
def _writer(
    handle: Any, suffix: str, schema: pa.Schema, dictionary: bool | list[str] = True
) -> Iterator[Callable[[pa.Table], None]]:
    writer: Any
    if suffix == ".parquet":
        writer = pq.ParquetWriter(handle, schema, use_dictionary=dictionary)
        write = writer.write_table
    else:
        nested = [f.name for f in schema if pa.types.is_nested(f.type)]
        flat = pa.schema([f.with_type(pa.string()) if f.name in nested else f for f in schema])
        writer = pacsv.CSVWriter(handle, flat)

        def write(table: pa.Table) -> None:
            for name in nested:  # CSV has no lists or objects: they are written as JSON text
                index = table.schema.get_field_index(name)
                table = table.set_column(index, name, _json_texts(table[name]))
            writer.write_table(table)

    try:
        yield write
    finally:
        writer.close()


def _json_texts(column: pa.ChunkedArray) -> pa.Array:
    """A list or struct column as JSON text (null stays null)."""
    return pa.array(
        [None if v is None else orjson.dumps(v, default=str).decode() for v in column.to_pylist()],
        pa.string(),
    )
