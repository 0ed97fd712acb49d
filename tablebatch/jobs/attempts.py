"""The attempts of one stage for one model: every row in shards, then the rows that failed
again, up to ``batch.max_attempts``, within an error budget.

Plain Python: a shard is sent by the callable the caller gives (``SendShard``: the
flow gives a Prefect task's ``submit``, a test a thread pool's), which returns
something with ``result()`` and ``add_done_callback()``. At most ``batch.concurrency``
shards are in flight, so that rendered requests and polls stay bounded however many rows
there are; they are taken as they end, so a shard that fails stops the run at once.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from tablebatch.api import BatchAPI
from tablebatch.jobs.build import Sendable, shard_rows
from tablebatch.jobs.cost import ShardCosts, Tokens
from tablebatch.jobs.guard import stopping
from tablebatch.jobs.naming import batch_prefix
from tablebatch.jobs.progress import Progress
from tablebatch.jobs.rows import ATTEMPTS, RUN_SCHEMA, best, no_answer, stopped_mask
from tablebatch.jobs.submit import Shard, ShardOutcome, StageRun, existing_batches
from tablebatch.jobs.take import chained
from tablebatch.jobs.watch import BatchWatcher


class Pending(Protocol):
    """A shard being sent (a Prefect future, a ``concurrent.futures.Future``)."""

    def result(self) -> ShardOutcome: ...

    def add_done_callback(self, fn: Callable[[Any], None]) -> None: ...


class Window:
    """The shards in flight, taken in the order they end (not the order sent): a shard
    that crashes raises at once, so the run's guard cancels the others while they still
    run, instead of after every shard sent before it has ended."""

    def __init__(self) -> None:
        self._ended: queue.SimpleQueue[tuple[int, Pending]] = queue.SimpleQueue()
        self.size = 0
        self.done: dict[int, ShardOutcome] = {}

    def add(self, index: int, pending: Pending) -> None:
        """Follow shard ``index``, being sent."""
        self.size += 1
        pending.add_done_callback(lambda _: self._ended.put((index, pending)))

    def take(self) -> int:
        """Wait for the next shard to end and keep its outcome (its index is returned);
        raises its error."""
        index, pending = self._ended.get()
        self.size -= 1
        self.done[index] = pending.result()
        return index

    def outcomes(self) -> list[ShardOutcome]:
        """The outcomes taken, in shard order (a run's results do not depend on timing)."""
        return [self.done[i] for i in sorted(self.done)]


SendShard = Callable[[BatchAPI, Shard], Pending]
ProgressFor = Callable[[StageRun, int, int], Progress]  # (stage, attempt, rows) -> its display


class Systemic(Exception):
    """Too many requests of an attempt failed at the API: the job stops instead of retrying
    them row by row. ``outcome`` holds what was answered so far."""

    def __init__(self, message: str, outcome: StageOutcome | None = None) -> None:
        super().__init__(message)
        self.outcome = outcome


@dataclass
class StageOutcome:
    """The results of every row of a stage for one model (``RUN_SCHEMA``, the newest
    attempt winning), its batches, and how many requests were sent now and found already
    on the API."""

    results: pa.Table
    batches: list[dict[str, Any]] = field(default_factory=list)
    sent: int = 0
    found: int = 0
    paid: Tokens = field(default_factory=Tokens)  # the tokens of the requests sent now
    exhausted: pa.Array = field(default_factory=lambda: pa.array([], pa.string()))


def check_budget(budget: float, attempt: pa.Table, retry: bool = False) -> None:
    """``Systemic`` when more than ``budget`` of an attempt's requests failed at the API
    (rows stopped by a cancel, and invalid answers, are no sign of a systemic failure).
    Under 10 failures are a pattern only when every request of a first attempt failed: a
    ``retry`` sends just the rows that failed before, so its last few failing is bad luck
    (one flaky row, retried alone, is 100% of its attempt)."""
    failed = attempt.filter(
        pc.and_(pc.equal(attempt["status"], "failed"), pc.invert(stopped_mask(attempt)))
    )
    sent = attempt.num_rows
    if not failed.num_rows or failed.num_rows <= budget * sent:
        return
    if failed.num_rows < 10 and (failed.num_rows < sent or retry):
        return  # too few to tell a pattern from bad luck
    counts = pc.value_counts(pc.fill_null(failed["error"], "no error text")).to_pylist()
    top = max(counts, key=lambda c: c["counts"])
    raise Systemic(
        f"{failed.num_rows} of {sent} requests failed ({failed.num_rows / sent:.0%}, over "
        f"batch.error_budget {budget:.0%}); the most common error, in {top['counts']} row(s): "
        f"{top['values']!r}. This looks systemic, so the job stops instead of retrying row by "
        "row: fix the cause (model name, API key, quota, prompt) and run again. Answered rows "
        "are kept and will not be sent again."
    )


def to_retry(results: pa.Table, retry_invalid: bool) -> pa.Array | pa.ChunkedArray:
    """The custom_ids an attempt sends again: failed rows, and invalid answers when the
    kind retries them."""
    again = pc.equal(results["status"], "failed")
    if retry_invalid:
        again = pc.or_(again, pc.equal(results["status"], "invalid"))
    return results.filter(again)["custom_id"]


def run_attempts(
    client: BatchAPI,
    run: StageRun,
    items: Sendable,
    send: SendShard,
    progress_for: ProgressFor | None = None,
    log: Callable[[str], None] | None = None,
    costs: ShardCosts | None = None,
) -> StageOutcome:
    """Send ``items`` in shards, then the rows that failed again, up to ``max_attempts``.

    Rows of a batch that was cancelled while this run waited are ``cancelled`` and not
    sent again (someone meant to stop them); rows of a batch found already cancelled are
    sent again. A stopped run starts no further shard or attempt. Raises ``Systemic`` (with
    the outcome so far) past the error budget, and when ``costs`` (``budget.max_cost``)
    lets no further shard go: the rows not sent are then ``cancelled`` (``not_sent``)."""
    config = run.config
    outcome = StageOutcome(RUN_SCHEMA.empty_table())
    final: pa.Table | None = None
    pending: Sendable = items
    for attempt in range(1, config.batch.max_attempts + 1):
        if not len(pending):
            break
        prefix = batch_prefix(config, run.stage, run.fingerprint, attempt)
        existing = existing_batches(client, prefix)
        progress = progress_for(run, attempt, len(pending)) if progress_for else None
        watcher = BatchWatcher(client, prefix, config)
        window = Window()
        over: str | None = None
        sent_ids: list[pa.Array | pa.ChunkedArray] = []

        stage_key = (run.stage, run.model, attempt)
        for index, rows in shard_rows(pending, config):
            if index and stopping():  # a stopped run sends no further shard
                break
            if window.size >= config.batch.concurrency:
                _take(window, costs, stage_key)
            if costs is not None:
                key, worst = (*stage_key, index), costs.worst(rows)
                while not costs.meter.reserve(key, worst) and window.size:
                    _take(window, costs, stage_key)  # in flight may cost less than its worst
                if key not in costs.meter.in_flight:
                    sent = sum(len(ids) for ids in sent_ids)
                    over = costs.meter.message(worst, len(pending) - sent, costs.currency)
                    break
                sent_ids.append(rows.ids)
            shard = Shard(run, attempt, index, rows, existing, progress, watcher)
            window.add(index, send(client, shard))
        while window.size:
            _take(window, costs, stage_key)
        done = window.outcomes()
        if progress is not None:
            progress.finish()
        for shard in done:
            outcome.batches.extend(shard.batches)
            outcome.sent += shard.sent
            outcome.found += shard.found
            outcome.paid += shard.paid
        tables = [s.results for s in done]
        if over is not None:  # the rows the cap kept back: never sent
            tables.append(_kept_back(run, pending, sent_ids, over))
        now = pa.concat_tables(tables, promote_options="default")
        now = now.append_column(ATTEMPTS, pa.array([attempt] * now.num_rows, pa.int32()))
        final = now if final is None else best([final, now])
        outcome.results = final
        try:
            check_budget(config.batch.error_budget, now, retry=attempt > 1)
        except Systemic as exc:
            raise Systemic(str(exc), outcome) from None
        if over is not None:
            raise Systemic(over, outcome)
        again = to_retry(now, run.kind.retry_invalid)
        if not len(again) or stopping():  # a stopped run starts no further attempt
            break
        pending = pending.select(again)
        if attempt < config.batch.max_attempts and log is not None:
            log(f"{len(again)} row(s) failed; attempt {attempt + 1} sends them again")
    return outcome


def _take(window: Window, costs: ShardCosts | None, stage_key: tuple[Any, ...]) -> None:
    """Take the next shard to end; with a cap, its reservation becomes what it cost."""
    index = window.take()
    if costs is not None:
        costs.meter.settle((*stage_key, index), costs.actual(window.done[index].paid))


def _kept_back(
    run: StageRun, pending: Sendable, sent: list[pa.Array | pa.ChunkedArray], why: str
) -> pa.Table:
    """Results for the rows of ``pending`` not sent because of the cap: ``cancelled``
    (``not_sent``, so a re-run sends them), spooled as the shards' results are."""
    ids = pending.ids
    if sent:
        done = chained(sent, pa.string())
        ids = pc.filter(ids, pc.invert(pc.is_in(ids, value_set=done.combine_chunks())))
    rows = no_answer(ids, "cancelled", "not_sent", f"not sent: {why}")
    return run.spool.put(rows) if run.spool is not None else rows
