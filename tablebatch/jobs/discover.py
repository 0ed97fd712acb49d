"""What the API already holds of a stage: the answers of every earlier batch of the job's
stage and prompt, for the requests a run is about to send.

A request is known by its id (a digest of what it sends), so an answer is found
whatever row carries the request now, wherever the row sits in the table, and
however the table was sharded when it was sent. One listing finds the stage's
batches (their names start with the stage's prefix); each is read for the run's
requests only, and one still running is waited for. A batch a stopped run left
unstarted (a crash while adding) is left to the shard of this run that has its name —
the same requests make the same name — which adds what it lacks and starts it; one
that no shard of this run will claim is started here, so that what it holds is
answered once, and read. The API alone is the source: a fresh machine finds what
every earlier run sent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tablebatch.api import Batch, BatchAPI
from tablebatch.jobs.attempts import StageOutcome
from tablebatch.jobs.build import Sendable
from tablebatch.jobs.naming import parse_batch_name, stage_prefix
from tablebatch.jobs.rows import ATTEMPTS, ITEM, best
from tablebatch.jobs.submit import StageRun, checked, results_of
from tablebatch.jobs.take import chained, single
from tablebatch.jobs.watch import wait_for

_OLDEST = datetime.min.replace(tzinfo=UTC)


@dataclass
class Listing:
    """A stage's batches as the API lists them, and the results of those that had ended,
    read whole (checked, their texts spooled): all that discovery can do before it knows
    the run's requests, so that it can be done while they are planned."""

    batches: list[Batch]
    read: dict[str, pa.Table] = field(default_factory=dict)  # batch id -> its results


def list_stage(client: BatchAPI, run: StageRun) -> Listing:
    """The stage's batches (one listing by prefix) and the results of the ended ones."""
    prefix = stage_prefix(run.config.name, run.stage, run.fingerprint)
    with run.timings.timed("collect"):
        listed = list(client.iter_batches(name_prefix=prefix, page_size=1000))
        listing = Listing(listed)
        for batch in listed:
            if batch.request_count and batch.is_terminal:
                listing.read[batch.id] = _results(client, run, batch)
    return listing


def discover(
    client: BatchAPI,
    run: StageRun,
    items: Sendable,
    claimed: Callable[[Sendable], set[str]],
    *,
    look_only: bool = False,
    listing: Listing | None = None,
) -> StageOutcome:
    """The stage's answers already on the API for ``items``' requests (``found``: how many
    were answered), one result per request id, and the batches they came from.
    ``claimed(pending)`` names the batches this run's first attempt would send for the
    requests still pending (an unstarted batch of such a name is left for it).
    ``look_only``: change nothing and wait for nothing (``tablebatch plan``): only the
    batches that have ended are read. ``listing``: the stage's ``list_stage``, made while
    the requests were planned (else listed now)."""
    if listing is None:
        prefix = stage_prefix(run.config.name, run.stage, run.fingerprint)
        with run.timings.timed("collect"):
            listing = Listing(list(client.iter_batches(name_prefix=prefix, page_size=1000)))
    listed, read = list(listing.batches), listing.read
    outcome = StageOutcome(best([]))
    if not listed or not len(items):
        return outcome
    listed.sort(key=lambda b: b.created_at or _OLDEST)
    unstarted = [b for b in listed if b.request_count and b.status in ("created", "pending")]
    started = [b for b in listed if b.request_count and b not in unstarted]
    if look_only:  # what has ended (an xAI batch seen from another process stays pending)
        ended = [b for b in unstarted if not b.pending_count]
        started, unstarted = [b for b in started if b.is_terminal] + ended, []
    tables = _read(client, run, started, items.ids, outcome, read)
    if unstarted:
        found = best(tables)
        pending = items.select(unanswered(items.ids, found, run.kind.retry_invalid))
        names = claimed(pending)
        left = [b for b in unstarted if b.name not in names]
        tables += _read(client, run, left, items.ids, outcome, read)
    outcome.results = best(tables)
    outcome.exhausted = _exhausted(tables, run.config.batch.max_attempts)
    return outcome


def _exhausted(tables: list[pa.Table], max_attempts: int) -> pa.Array:
    """The request ids that failed (or were invalid) in ``max_attempts`` batches or more, over
    every earlier run: ``batch.max_attempts`` tries per request, across runs."""
    failed = [
        t["custom_id"].filter(pc.is_in(t["status"], value_set=pa.array(["failed", "invalid"])))
        for t in tables
    ]
    if not failed:
        return pa.array([], pa.string())
    counts = pc.value_counts(chained(failed, pa.string()))
    return counts.field("values").filter(pc.greater_equal(counts.field("counts"), max_attempts))


def _read(
    client: BatchAPI,
    run: StageRun,
    batches: list[Batch],
    ids: pa.Array | pa.ChunkedArray,
    outcome: StageOutcome,
    read: dict[str, pa.Table],
) -> list[pa.Table]:
    """The batches' results for ``ids`` once each has ended (batches that hold none of
    them are left out). Each batch is read once, whole (from the result cache, or the API;
    ``read`` has those the listing saw ended), its texts spooled; their request ids are then
    matched against ``ids`` in one pass (hashing a million ids once, not once a batch)."""
    ended = [_ended(client, batch, run) for batch in batches]
    with run.timings.timed("collect"):
        tables = [_results(client, run, b) if b.id not in read else read.pop(b.id) for b in ended]
        if not tables:
            return []
        listed = chained((t["custom_id"] for t in tables), pa.string())
        where = pc.index_in(listed, value_set=ids)  # each result's request among ``ids``
    found, start = [], 0
    for batch, table in zip(ended, tables, strict=True):
        at = where.slice(start, table.num_rows)
        start += table.num_rows
        held = len(at) - at.null_count
        if not held:
            continue
        if held < table.num_rows:  # results for requests this run does not send
            wanted = pc.is_valid(at)
            table, at = table.filter(wanted), at.filter(wanted)
        table = table.append_column(ITEM, single(at).cast(pa.int64()))
        found.append(_found(run, batch, table, outcome))
    return found


def _results(client: BatchAPI, run: StageRun, batch: Batch) -> pa.Table:
    """Every result of an ended batch, checked, its texts spooled: read from the result
    cache (whose file the spool reads again, nothing written) or from the API (and kept)."""
    table = run.cache.get(batch) if run.cache is not None else None
    source = run.cache.path(batch) if run.cache is not None and table is not None else None
    if table is None:
        table = results_of(client, batch)
        if run.cache is not None:
            run.cache.put(batch, table)
    table = checked(table, run.kind)
    if run.spool is None:
        return table
    return run.spool.refer(source, table) if source is not None else run.spool.put(table)


def _found(run: StageRun, batch: Batch, table: pa.Table, outcome: StageOutcome) -> pa.Table:
    """A batch's results for the run, with the attempt that sent them; the batch counted
    among the run's."""
    parsed = parse_batch_name(batch.name)
    attempt = parsed.attempt if parsed else 1
    attempts = pa.array([attempt] * table.num_rows, pa.int32())
    outcome.batches.append(
        {
            "id": batch.id,
            "name": batch.name,
            "status": batch.status,
            "model": run.model,
            "stage": run.stage,
            "attempt": attempt,
            "requests": batch.request_count,
            "earlier": True,  # sent by an earlier run (or one at the same time)
        }
    )
    return table.append_column(ATTEMPTS, attempts)


def _ended(client: BatchAPI, batch: Batch, run: StageRun) -> Batch:
    """The batch once it has ended: started if a stopped run left it filled but unstarted,
    waited for if it is still running."""
    if batch.status in ("created", "pending"):
        batch = client.start(batch.id)
    if batch.is_terminal:
        return batch
    with run.timings.timed("wait"):
        return wait_for(client, batch, run.config)


def unanswered(
    ids: pa.Array | pa.ChunkedArray,
    found: pa.Table,
    retry_invalid: bool,
    exhausted: pa.Array | None = None,
) -> pa.Array | pa.ChunkedArray:
    """The ids of ``ids`` to send: no usable answer in ``found`` (invalid answers count as
    answered unless the kind sends them again), and not tried ``max_attempts`` times
    already (``exhausted``: a request failed in earlier runs as often as a run may try it
    is not paid for again by every later run; a stop after one attempt is tried again).
    Results ``discover`` found for ``ids`` carry their places among them (``_item``)."""
    done = pc.equal(found["status"], "completed")
    if not retry_invalid:
        done = pc.or_(done, pc.equal(found["status"], "invalid"))
    if ITEM in found.column_names and found.num_rows and not found[ITEM].null_count:
        # found for these ids (``_read``): their places, not their texts hashed again
        # (a million ids looked up in a million answers cost ~0.4 s)
        answered = np.zeros(len(ids), dtype=bool)
        answered[single(found[ITEM].filter(done)).to_numpy(zero_copy_only=False)] = True
        keep = pa.array(~answered)
        if exhausted is not None and len(exhausted):
            keep = pc.and_(keep, pc.invert(pc.is_in(ids, value_set=exhausted)))
        return pc.filter(ids, keep)
    settled = found["custom_id"].filter(done)
    if exhausted is not None and len(exhausted):
        settled = chained([settled, exhausted], pa.string())
    return pc.filter(ids, pc.invert(pc.is_in(ids, value_set=settled)))
