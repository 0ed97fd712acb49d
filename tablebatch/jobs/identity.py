"""A row's request id, known again from the previous output instead of rendered again.

A row's request id is a digest of the request it sends (``build.request_id``): to learn it,
a run renders and hashes every row, which at a million rows is most of what an incremental
run costs. The id is a pure function of the renderer (model, templates, params, examples,
where the cache mark goes, the size limit) and of the row's texts in the template's columns.
So the output records, in its Parquet metadata, a key of each model's renderer; the next
run whose renderer has the same key reads the previous output's ids, request ids and
template columns, and reuses a row's request id where each of its template columns reads as
the same text (as the renderer reads it). Only the other rows are rendered.

This memoises the id, never an answer: which requests are answered is still asked of the
API (discovery), so the API stays the truth. Anything unsure (another key, a CSV or remote
output, a column renamed, an id twice) falls back to rendering, which is always right.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tablebatch.jobs.rows import OUTPUT_COLUMNS
from tablebatch.jobs.take import single, take
from tablebatch.jobs.text import as_text, id_texts

if TYPE_CHECKING:
    from tablebatch.jobs.build import Renderer
    from tablebatch.jobs.plan import Plan
    from tablebatch.jobs.schema import JobConfig

METADATA_KEY = b"tablebatch.request_keys"  # the output's: {model: renderer key}
SCHEME = 1  # bump whenever rendering or request ids change in a way the key does not see
READ_ROWS = 50_000  # rows of the previous output compared at a time


def renderer_key(renderer: Renderer, config: JobConfig) -> str:
    """What a request id depends on besides the row's texts: equal keys and equal texts
    make equal requests."""
    shape = {
        "scheme": SCHEME,
        "orjson": version("orjson"),  # the encoder of every body
        "fingerprint": config.fingerprint(renderer.model),
        "kind": config.kind,
        "columns": renderer.columns,
        "filled": renderer.filled,
        "breakpoint": renderer.breakpoint,
        "limit": renderer.limit,
    }
    return hashlib.sha256(orjson.dumps(shape, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def with_keys(schema: pa.Schema, config: JobConfig, plans: Sequence[Plan]) -> pa.Schema:
    """The output's schema, its metadata naming each model's renderer key (the plans')."""
    keys = {plan.model: renderer_key(plan.rows.renderer, config) for plan in plans}
    return schema.with_metadata({**(schema.metadata or {}), METADATA_KEY: orjson.dumps(keys)})


class PriorOutput:
    """The previous output of a job, as far as it tells request ids (a local Parquet file
    written with renderer keys)."""

    def __init__(self, path: str, keys: dict[str, str], names: list[str]) -> None:
        self.path = path
        self.keys = keys
        self.names = names

    @classmethod
    def open(cls, path: str) -> PriorOutput | None:
        """The output at ``path`` if it can tell request ids; None when it cannot (none yet,
        not Parquet, not local, unreadable, or written before outputs had keys)."""
        if "://" in path or not path.endswith(".parquet") or not Path(path).is_file():
            return None
        try:
            schema = pq.read_schema(path)
            keys = _keys_of(schema)
        except (OSError, pa.ArrowException, orjson.JSONDecodeError):
            return None
        if not isinstance(keys, dict) or not keys:
            return None
        return cls(path, keys, schema.names)

    def request_ids(
        self, table: pa.Table, ids: pa.Array, renderer: Renderer, config: JobConfig
    ) -> pa.Array | None:
        """Each row of ``table``'s request id where the previous output knows it for the
        same texts (null where it does not); None when it knows none."""
        if self.keys.get(renderer.model) != renderer_key(renderer, config):
            return None
        ours = set(OUTPUT_COLUMNS) | set(config.kind_impl.output_columns())
        named = {c: f"{c}_input" if c in ours else c for c in renderer.columns}  # as written
        id_name = config.input.id_column
        id_column = f"{id_name}_input" if id_name in ours else id_name
        by_model = len(config.model_names) > 1
        if by_model and "model" not in ours:  # rows of several models, not told apart
            return None
        needed = [id_column, "request_id", *named.values(), *(["model"] if by_model else [])]
        if any(n not in self.names for n in needed):
            return None
        try:
            return self._read(table, ids, renderer, id_column, named, by_model)
        except (OSError, pa.ArrowException, orjson.JSONDecodeError):  # torn or odd: render
            return None

    def _read(
        self,
        table: pa.Table,
        ids: pa.Array,
        renderer: Renderer,
        id_column: str,
        named: dict[str, str],
        by_model: bool,
    ) -> pa.Array | None:
        file = pq.ParquetFile(self.path)
        if _keys_of(file.schema_arrow) != self.keys:
            return None  # another run wrote the output since ``open``: its keys, not these
        head = [id_column, *(["model"] if by_model else [])]
        front = file.read(columns=head, use_threads=False)
        where = pc.index_in(id_texts(front[id_column]), value_set=ids)  # its rows in ours
        if by_model:
            mine = pc.equal(front["model"], renderer.model)
            where = pc.if_else(mine, where, pa.scalar(None, where.type))
        where = single(where)
        del front
        valid = where.drop_null().to_numpy()
        if len(valid) == 0 or np.bincount(valid, minlength=table.num_rows).max() > 1:
            return None  # nothing in common, or a row twice: not one answer per row
        texts = {c: pc.fill_null(as_text(table[c]), "") for c in named}
        rows: list[pa.Array] = []
        known: list[pa.Array] = []
        start = 0
        columns = ["request_id", *named.values()]
        batches = file.iter_batches(READ_ROWS, columns=columns, use_threads=False)
        for batch in _ahead(batches):
            at = where.slice(start, batch.num_rows)
            start += batch.num_rows
            same = pc.fill_null(pc.starts_with(batch["request_id"], "k-"), False)
            same = pc.and_(same, pc.is_valid(at))
            for column, name in named.items():
                ours = take(texts[column], pc.fill_null(at, 0))  # not whole: take.py
                theirs = pc.fill_null(as_text(batch[name]), "")
                same = pc.and_(same, pc.fill_null(pc.equal(ours, theirs), False))
            same = single(same)  # ours may come in a chunk per chunk of the table
            rows.append(at.filter(same))
            known.append(batch["request_id"].filter(same))
        if start != len(where):
            return None
        return _scatter(table.num_rows, pa.concat_arrays(rows), pa.concat_arrays(known))


def _ahead(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The batches, each read (decoded, which lets go of the GIL) in a thread while the one
    before is compared: a million texts decode in ~0.5 s, about what comparing them takes."""
    with ThreadPoolExecutor(1, thread_name_prefix="tablebatch-prior") as reader:
        coming = reader.submit(next, batches, None)
        while (batch := coming.result()) is not None:
            coming = reader.submit(next, batches, None)
            yield batch


def _keys_of(schema: pa.Schema) -> object:
    """The renderer keys an output's metadata names ({} when it names none)."""
    return orjson.loads((schema.metadata or {}).get(METADATA_KEY, b"{}"))


def _scatter(length: int, rows: pa.Array, values: pa.Array) -> pa.Array:
    """An array of ``length`` with ``values[k]`` at ``rows[k]``, null elsewhere."""
    at = np.full(length, -1, dtype=np.int64)
    at[rows.to_numpy(zero_copy_only=False)] = np.arange(len(rows), dtype=np.int64)
    index = pa.array(at, mask=at < 0)
    return values.take(index).cast(pa.string())
