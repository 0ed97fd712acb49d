"""A job's side of the Batch API: submit a shard once, wait for it, collect its results.

Nothing here needs a local file to resume: a batch is found again by its
deterministic name (``tablebatch.jobs.naming``), and a found batch receives only
the requests it does not hold yet. The API is the source of truth.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tablebatch.api import Batch, BatchAPI, ConflictError
from tablebatch.crash import crash_point
from tablebatch.jobs.build import Sendable, render_shard
from tablebatch.jobs.cost import Tokens
from tablebatch.jobs.guard import stopping
from tablebatch.jobs.kinds import Kind
from tablebatch.jobs.naming import (
    Stage,
    batch_description,
    batch_name,
    content_digest,
    piece_name,
)
from tablebatch.jobs.progress import Progress
from tablebatch.jobs.result_cache import ResultCache
from tablebatch.jobs.rows import (
    COLLECTED,
    NOT_SENT,
    Reason,
    no_answer,
)
from tablebatch.jobs.schema import JobConfig
from tablebatch.jobs.spool import Spool
from tablebatch.jobs.timing import Timings
from tablebatch.jobs.watch import BatchWatcher, wait_for


@dataclass(frozen=True)
class StageRun:
    """What every shard of one stage for one model shares, over all its attempts."""

    config: JobConfig  # the run's (its batch settings within the API's limits)
    stage: Stage
    model: str
    fingerprint: str
    spool: Spool | None = None  # where the results' texts go
    timings: Timings = field(default_factory=Timings)
    cache: ResultCache | None = None  # ended batches' results, read from the API once

    @property
    def kind(self) -> Kind:
        """The job's kind (which may check answers as they are collected)."""
        return self.config.kind_impl


@dataclass(frozen=True)
class Shard:
    """One shard of one attempt: all that sending it needs, as one object."""

    run: StageRun
    attempt: int
    index: int
    rows: Sendable
    existing: Mapping[str, Batch] | None = None  # the attempt's batches found by one listing
    progress: Progress | None = None
    watcher: BatchWatcher | None = None

    @cached_property
    def name(self) -> str:
        """The name of its (first) batch: its stage, attempt and what it holds."""
        run = self.run
        content = content_digest(self.rows.ids.to_pylist())
        return batch_name(run.config, run.stage, run.fingerprint, self.attempt, content)


@dataclass
class ShardOutcome:
    """What sending one shard came to: its batches (for the report), a result per row (rows
    left out at rendering are ``skipped``; rows stopped by a cancel while this run waited
    are ``cancelled``), the requests sent now and those found already on the API."""

    batches: list[dict[str, Any]]
    results: pa.Table
    sent: int = 0
    found: int = 0
    paid: Tokens = field(default_factory=Tokens)  # the tokens of the requests sent now


def existing_batches(client: BatchAPI, prefix: str) -> dict[str, Batch]:
    """The oldest batch of each name that starts with ``prefix``: one listing for all the
    shards of an attempt, instead of one lookup per shard."""
    found: dict[str, Batch] = {}
    for batch in client.iter_batches(name_prefix=prefix, page_size=1000):  # newest first
        found[batch.name] = batch  # so the oldest of a name is written last
    return found


def claim_batch(
    client: BatchAPI,
    name: str,
    model: str,
    description: str,
    existing: Mapping[str, Batch] | None = None,
) -> Batch:
    """The batch named ``name``: the oldest one of that name, created if there is none.

    ``existing`` is what ``existing_batches`` found for the attempt (else the name is
    looked up now). Two runs of the same job at once may both create one; each then
    lists the batches of that name and keeps the oldest, and the other cancels its own,
    still empty (so costing nothing). Both go on with the same batch.
    """
    if existing is None:
        found = list(client.iter_batches(name=name))  # newest first
        if found:
            return found[-1]
    elif name in existing:
        return existing[name]
    mine = client.create_batch(name, model=model, description=description)
    crash_point("after-create")
    oldest = list(client.iter_batches(name=name))[-1]
    if oldest.id != mine.id:
        client.cancel(mine.id)
    return oldest


def submit_shard(
    client: BatchAPI,
    name: str,
    model: str,
    items: Iterable[tuple[str, bytes]],
    description: str,
    existing: Mapping[str, Batch] | None = None,
) -> tuple[Batch, int]:
    """Find or create the shard's batch, add what it lacks, start it; returns it and the
    number of requests sent now (0 when the batch already held them all)."""
    batch = claim_batch(client, name, model, description, existing)
    sent = 0
    if batch.status in ("created", "pending"):
        try:
            sent = client.add_requests(batch.id, items).added
            batch = client.start(batch.id)
        except ConflictError:
            batch = client.get_batch(batch.id)  # another run of the job started it
            if batch.status in ("created", "pending"):
                raise
    return batch, sent


def _read(result: dict[str, Any], batch_id: str, out: dict[str, list[Any]]) -> None:
    """Append one raw result to the columns of ``out``."""
    answer = error = reason = None
    prompt = completion = cached = written = 0
    response = result.get("response")
    if result.get("status") == "completed" and isinstance(response, dict):
        try:
            answer = response["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            answer = None
        usage = response.get("usage") or {}
        prompt = usage.get("prompt_tokens") or 0
        completion = usage.get("completion_tokens") or 0
        cached, written = cache_tokens(usage)
        if not isinstance(answer, str):
            answer, error = None, "the response has no message content"
    else:
        raw = result.get("error")
        error = (
            f"{raw.get('type')}: {raw.get('message')}"
            if isinstance(raw, dict)
            else "the request failed with no error"
        )
        kind = raw.get("type") if isinstance(raw, dict) else None
        if result.get("status") == "cancelled" or kind == "cancelled":
            reason = "cancelled"
    out["custom_id"].append(result.get("custom_id"))
    out["status"].append("completed" if answer is not None else "failed")
    out["answer"].append(answer)
    out["error"].append(error)
    out["batch_id"].append(batch_id)
    out["prompt_tokens"].append(prompt if isinstance(prompt, int) else 0)
    out["completion_tokens"].append(completion if isinstance(completion, int) else 0)
    out["reason"].append(reason)
    out["cached_tokens"].append(cached)
    out["cache_write_tokens"].append(written)


def cache_tokens(usage: Any) -> tuple[int, int]:
    """Of a chat completion's prompt tokens, those read from and written to the provider's
    prompt cache: ``usage.prompt_tokens_details.cached_tokens`` (OpenAI, xAI; the Anthropic
    dialect puts its cache reads there) and ``cache_write_tokens`` (Anthropic's writes)."""
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    if not isinstance(details, dict):
        return 0, 0
    read, written = details.get("cached_tokens"), details.get("cache_write_tokens")
    return (
        read if isinstance(read, int) and read > 0 else 0,
        written if isinstance(written, int) and written > 0 else 0,
    )


def collect(
    client: BatchAPI,
    batch: Batch,
    custom_ids: pa.Array | pa.ChunkedArray,
    *,
    missing_rows: bool = True,
    cache: ResultCache | None = None,
) -> pa.Table:
    """Every result of a finished batch for these custom_ids, as a table (built a page at a
    time, in pages as large as the API takes, or from ``cache`` when an earlier run read the
    batch); requests with none get the batch's reason (with ``missing_rows``: a batch this
    run sent holds them all)."""
    table = results_of(client, batch, cache)
    # the batch's ids are the hashed side: an earlier run's batch is read for every row of
    # a million-row table, and hashing the table's ids once a batch cost 0.7 s a batch
    wanted = pc.is_in(custom_ids, value_set=table["custom_id"])
    present = custom_ids.filter(wanted)
    if len(present) < table.num_rows:  # results for requests this run does not send: not ours
        table = table.filter(pc.is_in(table["custom_id"], value_set=present))
    missing = custom_ids.filter(pc.invert(wanted)) if missing_rows else []
    if len(missing):
        why: Reason
        if batch.status == "cancelled":
            why = "cancelled"
            text = f"cancelled: batch {batch.id} was cancelled before this row was answered"
        elif batch.status == "failed":
            why = "batch_failed"
            cause = batch.error.message if batch.error else "no reason given"
            text = f"batch_failed: batch {batch.id} failed: {cause}"
        else:
            why = "no_result"
            text = f"missing: batch {batch.id} ({batch.status}) returned no result for this row"
        table = pa.concat_tables([table, no_answer(missing, "failed", why, text, batch.id)])
    return table


def results_of(client: BatchAPI, batch: Batch, cache: ResultCache | None = None) -> pa.Table:
    """Every result of a finished batch: from ``cache`` when an earlier run kept them, else
    read from the API (and kept)."""
    table = cache.get(batch) if cache is not None else None
    if table is None:
        table = _every_result(client, batch)
        if cache is not None:
            cache.put(batch, table)
    return table


def _every_result(client: BatchAPI, batch: Batch) -> pa.Table:
    """Every result of the batch, read from the API a page at a time."""
    pages: list[pa.RecordBatch] = []
    read = 0
    for page in client.iter_result_pages(batch.id, page_size=10_000):
        out: dict[str, list[Any]] = {name: [] for name in COLLECTED.names}
        for result in page:
            _read(result, batch.id, out)
        pages.append(pa.RecordBatch.from_pydict(out, schema=COLLECTED))
        read += len(page)
        if read >= 1000:
            crash_point("collecting")
    return pa.Table.from_batches(pages, schema=COLLECTED)


def checked(table: pa.Table, kind: Kind) -> pa.Table:
    """Answered rows whose answer the kind finds invalid become ``invalid``, with why."""
    problems = kind.check_answers(table["answer"].combine_chunks())
    if problems is None:
        return table
    bad = pc.and_(pc.is_valid(problems), pc.equal(table["status"], "completed"))
    if not pc.any(bad).as_py():
        return table
    columns = {
        "status": pc.if_else(bad, "invalid", table["status"]),
        "error": pc.if_else(bad, problems, table["error"]),
        "reason": pc.if_else(bad, "invalid", table["reason"]),
    }
    for name, values in columns.items():
        table = table.set_column(table.schema.get_field_index(name), name, values)
    return table


def send_shard(
    client: BatchAPI, shard: Shard, on_progress: Callable[[Batch], None] | None = None
) -> ShardOutcome:
    """Render a shard, submit it (more than one batch only when its bytes need it), wait
    for it, collect it. The rendered requests are dropped once sent; with a spool, the
    results' texts are written to it and the outcome keeps the rest. A shard of a run that
    is stopping starts no batch: its rows are ``cancelled``, never sent."""
    run = shard.run
    spool = run.spool
    if stopping():
        stopped = no_answer(shard.rows.ids, "cancelled", "not_sent", NOT_SENT)
        return ShardOutcome([], spool.put(stopped) if spool is not None else stopped)
    with run.timings.timed("build"):
        pieces, skipped = render_shard(shard.rows, run.config)
    submitted: list[tuple[Batch, pa.ChunkedArray, float]] = []
    sent = total = 0
    with run.timings.timed("submit"):
        for index, piece in enumerate(pieces):
            description = batch_description(
                run.config.name, run.model, run.stage, shard.attempt, len(piece)
            )
            name = piece_name(shard.name, index)
            found, added = submit_shard(client, name, run.model, piece, description, shard.existing)
            submitted.append((found, piece.ids, added / max(len(piece), 1)))
            sent += added
            total += len(piece)
    del pieces
    batches: list[dict[str, Any]] = []
    tables: list[pa.Table] = []
    paid = Tokens()
    for found, ids, share in submitted:
        with run.timings.timed("wait"):
            if shard.watcher is not None:
                ended = shard.watcher.wait(found, on_progress)
            else:
                ended = wait_for(client, found, run.config, on_progress)
        with run.timings.timed("collect"):
            table = checked(collect(client, ended, ids, cache=run.cache), run.kind)
        if ended.status == "cancelled" and found.status != "cancelled":
            stopped = pc.fill_null(pc.equal(table["reason"], "cancelled"), False)
            status = pc.if_else(stopped, "cancelled", table["status"])
            table = table.set_column(table.schema.get_field_index("status"), "status", status)
        tables.append(table)
        paid += Tokens.of(table).scaled(share)  # a batch an earlier run filled: not paid now
        batches.append(
            {
                "id": ended.id,
                "name": ended.name,
                "status": ended.status,
                "model": run.model,
                "stage": run.stage,
                "attempt": shard.attempt,
                "requests": ended.request_count,
            }
        )
    if skipped:
        left_out = pa.array(list(skipped), pa.string())
        tables.append(no_answer(left_out, "skipped", "skipped", list(skipped.values())))
    results = pa.concat_tables(tables) if tables else _empty()
    if spool is not None:  # the texts go to disk; the run keeps what it decides with
        results = spool.put(results)
    return ShardOutcome(batches, results, sent, total - sent, paid)


def _empty() -> pa.Table:
    return COLLECTED.empty_table()
