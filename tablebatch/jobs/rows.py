"""The shapes of a run's rows, in one place: the results a run keeps, the output columns
every job has, and the rows with no answer, each with the reason as a value.

A run keeps one result row per request (``RESULT_SCHEMA``, plus ``reason`` and the
``attempts`` that answered it). A row the model did not answer says why in
``reason``, a value of ``Reason`` rather than a sentence to parse back: the text in
``error`` is for people.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import pyarrow as pa
import pyarrow.compute as pc

from tablebatch.jobs.take import distinct, take

RESULT_SCHEMA = pa.schema(
    [
        ("custom_id", pa.string()),
        ("status", pa.string()),
        ("answer", pa.string()),
        ("error", pa.string()),
        ("batch_id", pa.string()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
    ]
)
Reason = Literal[
    "skipped",  # never sent: its prompt is empty, or its request is too large
    "not_sent",  # never sent: the run was stopped first
    "cancelled",  # its batch was cancelled before it was answered
    "batch_failed",  # its batch failed before it was answered
    "no_result",  # its batch ended without a result for it
    "invalid",  # answered, but the answer is not what the kind asks for
]
REASONS: tuple[str, ...] = get_args(Reason)
STOPPED: tuple[Reason, ...] = ("cancelled", "not_sent")  # someone meant to stop these
# Of a result's prompt tokens, those read from / written to the provider's prompt cache (where
# its usage says; 0 elsewhere). Not in RESULT_SCHEMA: tables without them read as 0.
CACHE_TOKENS = (pa.field("cached_tokens", pa.int64()), pa.field("cache_write_tokens", pa.int64()))
REASON = pa.field("reason", pa.string())
ATTEMPTS = pa.field("attempts", pa.int32())
COLLECTED = pa.schema([*RESULT_SCHEMA, REASON, *CACHE_TOKENS])  # a batch's results, as read
RUN_SCHEMA = COLLECTED.append(ATTEMPTS)  # a run's results, all attempts

# The columns every output has after the input's, in this order, with their types.
OUTPUT_COLUMNS: dict[str, pa.DataType] = {
    "answer": pa.string(),
    "status": pa.string(),
    "error": pa.string(),
    "batch_id": pa.string(),
    "attempts": pa.int32(),
    "prompt_tokens": pa.int64(),
    "completion_tokens": pa.int64(),
    "cached_tokens": pa.int64(),  # of prompt_tokens: read from the provider's prompt cache
    "cache_write_tokens": pa.int64(),  # of prompt_tokens: written to it (Anthropic)
    "request_id": pa.string(),  # the id of what the row sends: rows that send the same, share
    "shared_with": pa.int32(),  # how many other rows send the same request (and share its answer)
}
NOT_SENT = "cancelled: the run was stopped before this row was sent"


def default_output(job: str) -> str:
    """Where a job's output goes when its config names no path (relative to its project)."""
    return f"data/output/{job}.parquet"


def results_table(rows: dict[str, list[Any]] | None = None) -> pa.Table:
    """Row results as an Arrow table (columns of ``RESULT_SCHEMA``)."""
    rows = rows or {name: [] for name in RESULT_SCHEMA.names}
    return pa.table(rows, schema=RESULT_SCHEMA)


def reasons(results: pa.Table) -> pa.ChunkedArray | pa.Array:
    """The ``reason`` column of results (all null when they have none: API results)."""
    if "reason" in results.column_names:
        return results["reason"]
    return pa.nulls(results.num_rows, pa.string())


def with_reasons(results: pa.Table) -> pa.Table:
    """Results with a ``reason`` column (null where they had none)."""
    if "reason" in results.column_names:
        return results
    return results.append_column(REASON, pa.nulls(results.num_rows, pa.string()))


def stopped_mask(results: pa.Table) -> pa.Array | pa.ChunkedArray:
    """Which results were stopped by a cancel or a stop (reason ``cancelled``/``not_sent``)."""
    return pc.fill_null(pc.is_in(reasons(results), value_set=pa.array(STOPPED)), False)


def no_answer(
    custom_ids: pa.Array | pa.ChunkedArray,
    status: str,
    reason: Reason,
    error: str | list[str],
    batch: str | None = None,
    schema: pa.Schema | None = None,
) -> pa.Table:
    """Result rows with no answer: ``status``, ``reason`` and ``error`` (one, or one per
    row), in the columns of ``schema`` (default ``COLLECTED``, as a batch's results; other
    columns of it, such as where a spooled answer is, are null; tokens and attempts 0)."""
    n = len(custom_ids)
    schema = schema or COLLECTED
    values: dict[str, Any] = {
        "custom_id": custom_ids,
        "status": pa.array([status] * n, pa.string()),
        "reason": pa.array([reason] * n, pa.string()),
        "error": pa.array(error if isinstance(error, list) else [error] * n, pa.string()),
        "batch_id": pa.array([batch] * n, pa.string()),
        "prompt_tokens": pa.array([0] * n, pa.int64()),
        "completion_tokens": pa.array([0] * n, pa.int64()),
        "cached_tokens": pa.array([0] * n, pa.int64()),
        "cache_write_tokens": pa.array([0] * n, pa.int64()),
        "attempts": pa.array([0] * n, pa.int32()),
    }
    columns = [values.get(f.name, pa.nulls(n, f.type)).cast(f.type) for f in schema]
    return pa.table(columns, schema=schema)


def unsent(ids: pa.Array | pa.ChunkedArray, schema: pa.Schema | None = None) -> pa.Table:
    """Results for the rows of a run stopped before it sent them: ``cancelled``, in the
    columns of ``schema`` (by default a run's: ``RUN_SCHEMA``)."""
    return no_answer(ids, "cancelled", "not_sent", NOT_SENT, schema=schema or RUN_SCHEMA)


def as_stopped(results: pa.Table, ids: pa.Array | pa.ChunkedArray) -> pa.Table:
    """The results of a stopped run: rows a cancel stopped are ``cancelled`` (however early
    the cancel came), and rows of ``ids`` never sent get a ``cancelled`` row of their own."""
    results = with_reasons(results)
    status = pc.if_else(stopped_mask(results), "cancelled", results["status"])
    results = results.set_column(results.schema.get_field_index("status"), "status", status)
    missing = pc.filter(ids, pc.invert(pc.is_in(ids, value_set=results["custom_id"])))
    if not len(missing):
        return results
    return pa.concat_tables([results, unsent(missing, results.schema)])


def input_columns(table: pa.Table, ours: set[str]) -> pa.Table:
    """The input columns, renamed ``<name>_input`` where they collide with the output's."""
    names = [f"{n}_input" if n in ours else n for n in table.column_names]
    return table.rename_columns(names)


ITEM = "_item"  # a result discovery found: its request's place among the stage's requests
_RANK = {"completed": 0, "invalid": 1, "failed": 2, "cancelled": 3, "skipped": 4}


def best(tables: list[pa.Table]) -> pa.Table:
    """One result per custom_id from several (earlier runs' batches, this run's attempts):
    an answer beats an invalid answer, which beats a failure or a cancel, so a good answer
    is never replaced by a worse one; among equals the later table wins (a newer attempt)."""
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return RUN_SCHEMA.empty_table()
    both = pa.concat_tables(tables, promote_options="default")
    n = both.num_rows
    if distinct(both["custom_id"]):  # one result per id already
        return tables[0] if len(tables) == 1 else both
    ranked_statuses = pa.array(list(_RANK), pa.string())
    rank = pc.fill_null(pc.index_in(both["status"], value_set=ranked_statuses), len(_RANK))
    order = pa.array(range(n, 0, -1), pa.int64())  # later first
    keyed = pa.table({"id": both["custom_id"], "rank": rank, "order": order})
    ranked = pc.sort_indices(
        keyed, [("id", "ascending"), ("rank", "ascending"), ("order", "ascending")]
    )
    ids = both["custom_id"].take(ranked).combine_chunks()
    previous = pa.concat_arrays([pa.nulls(1, pa.string()), ids.slice(0, max(n - 1, 0))])
    first = pc.fill_null(pc.not_equal(ids, previous), True)
    return take(both, ranked.filter(first))
