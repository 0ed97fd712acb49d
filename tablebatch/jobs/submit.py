"""A job's side of the Batch API: submit a shard once, wait for it, collect its results.

Nothing here needs a local file to resume: a batch is found again by its
deterministic name, and a found batch receives only the requests it does not
hold yet. The API is the source of truth.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from tablebatch.api import (
    Batch,
    BatchAPI,
    BatchClient,
    ConflictError,
    UnprocessableEntityError,
    WaitTimeoutError,
)
from tablebatch.crash import crash_point
from tablebatch.jobs.build import Requests
from tablebatch.jobs.config import JobConfig
from tablebatch.jobs.guard import NOT_SENT, stopping
from tablebatch.jobs.spool import Spool
from tablebatch.jobs.timing import timed

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


def results_table(rows: dict[str, list[Any]] | None = None) -> pa.Table:
    """Row results as an Arrow table (columns of ``RESULT_SCHEMA``)."""
    rows = rows or {name: [] for name in RESULT_SCHEMA.names}
    return pa.table(rows, schema=RESULT_SCHEMA)


def batch_name(config: JobConfig, stage: str, fingerprint: str, attempt: int, shard: int) -> str:
    """The deterministic name of a shard's batch: how a re-run finds it again."""
    return f"{config.name}--{stage}-{fingerprint}--a{attempt}--s{shard:04d}"


def batch_description(config: JobConfig, model: str, stage: str, attempt: int, rows: int) -> str:
    """What the batch is, for a person reading the API's batch list."""
    return orjson.dumps(
        {"job": config.name, "stage": stage, "model": model, "attempt": attempt, "rows": rows}
    ).decode()


def batch_prefix(config: JobConfig, stage: str, fingerprint: str, attempt: int) -> str:
    """What the names of an attempt's batches start with (``batch_name`` less the shard)."""
    return batch_name(config, stage, fingerprint, attempt, 0).removesuffix("s0000")


def existing_batches(client: BatchAPI, prefix: str) -> dict[str, Batch]:
    """The oldest batch of each name that starts with ``prefix``: one listing for all the
    shards of an attempt, instead of one lookup per shard."""
    found: dict[str, Batch] = {}
    try:
        batches = list(client.iter_batches(name_prefix=prefix, page_size=1000))
    except UnprocessableEntityError:  # a server whose pages are smaller
        batches = list(client.iter_batches(name_prefix=prefix))
    for batch in batches:  # newest first: the oldest of a name is written last
        found[batch.name] = batch
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


def wait_for(
    client: BatchAPI,
    batch: Batch,
    config: JobConfig,
    on_progress: Callable[[Batch], None] | None = None,
) -> Batch:
    """Poll a batch until it ends (``wait_for_batch`` with the job's settings)."""
    if batch.is_terminal:
        if on_progress is not None:
            on_progress(batch)
        return batch
    return client.wait_for_batch(
        batch.id,
        poll_interval=config.batch.poll_interval_s,
        max_poll_interval=config.batch.max_poll_interval_s,
        max_wait=config.batch.max_wait_s,
        on_progress=on_progress,
    )


def _read(result: dict[str, Any], batch_id: str, out: dict[str, list[Any]]) -> None:
    """Append one raw result to the columns of ``out``."""
    answer = error = None
    prompt = completion = 0
    response = result.get("response")
    if result.get("status") == "completed" and isinstance(response, dict):
        try:
            answer = response["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            answer = None
        usage = response.get("usage") or {}
        prompt = usage.get("prompt_tokens") or 0
        completion = usage.get("completion_tokens") or 0
        if not isinstance(answer, str):
            answer, error = None, "the response has no message content"
    else:
        raw = result.get("error")
        error = (
            f"{raw.get('type')}: {raw.get('message')}"
            if isinstance(raw, dict)
            else "the request failed with no error"
        )
    out["custom_id"].append(result.get("custom_id"))
    out["status"].append("completed" if answer is not None else "failed")
    out["answer"].append(answer)
    out["error"].append(error)
    out["batch_id"].append(batch_id)
    out["prompt_tokens"].append(prompt if isinstance(prompt, int) else 0)
    out["completion_tokens"].append(completion if isinstance(completion, int) else 0)


def _pages(client: BatchAPI, batch_id: str) -> Any:
    """Result pages as large as the server allows (10,000, else its own maximum)."""
    try:
        first = True
        for page in client.iter_result_pages(batch_id, page_size=10_000):
            first = False
            yield page
    except UnprocessableEntityError:
        if not first:
            raise
        yield from client.iter_result_pages(batch_id, page_size=1000)


def collect(client: BatchAPI, batch: Batch, custom_ids: pa.Array | pa.ChunkedArray) -> pa.Table:
    """Every result of a finished batch, as a table (built a page at a time); requests with
    none get the batch's reason."""
    pages: list[pa.RecordBatch] = []
    read = 0
    for page in _pages(client, batch.id):
        out: dict[str, list[Any]] = {name: [] for name in RESULT_SCHEMA.names}
        for result in page:
            _read(result, batch.id, out)
        pages.append(pa.RecordBatch.from_pydict(out, schema=RESULT_SCHEMA))
        read += len(page)
        if read >= 1000:
            crash_point("collecting")
    table = pa.Table.from_batches(pages, schema=RESULT_SCHEMA)
    ours = pc.is_in(table["custom_id"], value_set=custom_ids)
    if not pc.all(ours).as_py():  # results for requests this shard did not send: not ours
        table = table.filter(ours)
    missing = pc.filter(custom_ids, pc.invert(pc.is_in(custom_ids, value_set=table["custom_id"])))
    if len(missing):
        if batch.status == "cancelled":
            reason = f"cancelled: batch {batch.id} was cancelled before this row was answered"
        elif batch.status == "failed":
            why = batch.error.message if batch.error else "no reason given"
            reason = f"batch_failed: batch {batch.id} failed: {why}"
        else:
            reason = f"missing: batch {batch.id} ({batch.status}) returned no result for this row"
        table = pa.concat_tables([table, _rows(missing, "failed", reason, batch.id)])
    return table


def _rows(
    custom_ids: pa.Array | pa.ChunkedArray, status: str, error: str | list[str], batch: str | None
) -> pa.Table:
    """Result rows with no answer: ``status`` and ``error`` (one, or one per row)."""
    n = len(custom_ids)
    errors = error if isinstance(error, list) else [error] * n
    return pa.table(
        {
            "custom_id": custom_ids,
            "status": pa.array([status] * n, pa.string()),
            "answer": pa.nulls(n, pa.string()),
            "error": pa.array(errors, pa.string()),
            "batch_id": pa.array([batch] * n, pa.string()),
            "prompt_tokens": pa.array([0] * n, pa.int64()),
            "completion_tokens": pa.array([0] * n, pa.int64()),
        },
        schema=RESULT_SCHEMA,
    )


class Sendable(Protocol):
    """Rows to send: rendered into requests when their shard is sent (``Rows``), or
    already rendered (``Requests``)."""

    ids: pa.Array | pa.ChunkedArray

    def __len__(self) -> int: ...

    def render(self) -> tuple[Requests, dict[str, str]]: ...


@dataclass
class ShardOutcome:
    """What sending one shard came to: its batches (for the report) and a result per row
    (rows left out at rendering are ``skipped``; rows stopped by a cancel while this run
    waited are ``cancelled``)."""

    batches: list[dict[str, Any]]
    results: pa.Table
    sent: int = 0


def send_shard(
    client: BatchAPI,
    config: JobConfig,
    rows: Sendable,
    name: str,
    model: str,
    stage: str,
    attempt: int,
    existing: Mapping[str, Batch] | None = None,
    run: str = "",
    on_progress: Callable[[Batch], None] | None = None,
    watcher: BatchWatcher | None = None,
    spool: Spool | None = None,
) -> ShardOutcome:
    """Render a shard, submit it (more than one batch only when its bytes need it), wait
    for it, collect it. The rendered requests are dropped once sent; with a ``spool``,
    the results' texts are written to it and the outcome keeps the rest. A shard of a
    run that is stopping starts no batch: its rows are ``cancelled``, never sent."""
    if stopping():
        stopped = _rows(rows.ids, "cancelled", NOT_SENT, None)
        return ShardOutcome([], spool.put(stopped) if spool is not None else stopped)
    with timed(run, "build"):
        requests, skipped = rows.render()
        pieces = requests.shards(config.batch.max_requests, config.batch.max_bytes)
    del requests
    submitted: list[tuple[Batch, pa.ChunkedArray]] = []
    sent = 0
    with timed(run, "submit"):
        for index, piece in enumerate(pieces):
            piece_name = name if index == 0 else f"{name}-{index}"
            description = batch_description(config, model, stage, attempt, len(piece))
            found, added = submit_shard(client, piece_name, model, piece, description, existing)
            submitted.append((found, piece.ids))
            sent += added
    del pieces
    batches: list[dict[str, Any]] = []
    tables: list[pa.Table] = []
    for found, ids in submitted:
        with timed(run, "wait"):
            if watcher is not None:
                ended = watcher.wait(found, on_progress)
            else:
                ended = wait_for(client, found, config, on_progress)
        with timed(run, "collect"):
            table = collect(client, ended, ids)
        if ended.status == "cancelled" and found.status != "cancelled":
            stopped = pc.and_(
                pc.equal(table["status"], "failed"),
                pc.fill_null(pc.starts_with(table["error"], "cancelled:"), False),
            )
            status = pc.if_else(stopped, "cancelled", table["status"])
            table = table.set_column(table.schema.get_field_index("status"), "status", status)
        tables.append(table)
        batches.append(
            {
                "id": ended.id,
                "name": ended.name,
                "status": ended.status,
                "model": model,
                "stage": stage,
                "attempt": attempt,
                "requests": ended.request_count,
            }
        )
    if skipped:
        left_out = pa.array(list(skipped), pa.string())
        tables.append(_rows(left_out, "skipped", list(skipped.values()), None))
    results = pa.concat_tables(tables) if tables else results_table()
    if spool is not None:  # the texts go to disk; the run keeps what it decides with
        results = spool.put(results)
    return ShardOutcome(batches, results, sent)


class BatchWatcher:
    """Waits for the batches of an attempt with one listing a poll for all of them (the
    attempt's name prefix), instead of a poll per batch: a hundred shards in flight cost
    one call a round, not a hundred.

    Only for the seed's API (``BatchClient``): other dialects list without a name filter,
    so each of their batches is polled on its own, as ``wait_for_batch`` does; and so is
    each batch on a seed server that ignores the prefix filter (an extension of the local
    server), which shows itself by listing other batches too.
    """

    PAGE = 1000

    def __init__(
        self,
        client: Any,
        prefix: str,
        config: JobConfig,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.config = config
        self._clock = clock
        self._sleep = sleep or getattr(client, "sleep", time.sleep)  # as its client waits
        self._cond = threading.Condition()
        self._latest: dict[str, Batch] = {}
        self._waiting: dict[str, int] = {}  # batch id -> waiters
        self._round = 0
        self._error: BaseException | None = None
        self._shared = isinstance(client, BatchClient)
        self._polling = False
        self.polls = 0

    def wait(self, batch: Batch, on_progress: Callable[[Batch], None] | None = None) -> Batch:
        """The batch once it has ended; ``WaitTimeoutError`` after ``batch.max_wait_s``."""
        if batch.is_terminal or not self._shared:
            return wait_for(self.client, batch, self.config, on_progress)
        started = self._clock()
        max_wait = self.config.batch.max_wait_s
        deadline = None if max_wait is None else started + max_wait
        with self._cond:
            self._waiting[batch.id] = self._waiting.get(batch.id, 0) + 1
            self._latest.setdefault(batch.id, batch)
            if not self._polling:
                self._polling = True
                threading.Thread(target=self._poll, name="batch-watcher", daemon=True).start()
        try:
            seen, last = -1, None
            while True:
                with self._cond:
                    while self._round == seen and self._error is None and self._shared:
                        left = None if deadline is None else deadline - self._clock()
                        if left is not None and left <= 0:
                            break
                        self._cond.wait(left)
                    if self._error is not None:
                        raise self._error
                    seen, current, shared = self._round, self._latest[batch.id], self._shared
                if not shared:
                    return wait_for(self.client, current, self.config, on_progress)
                state = (current.status, current.completed_count, current.failed_count)
                if on_progress is not None and state != last:
                    on_progress(current)
                last = state
                if current.is_terminal:
                    return current
                if deadline is not None and self._clock() >= deadline:
                    raise WaitTimeoutError(current, self._clock() - started)
        finally:
            with self._cond:
                self._waiting[batch.id] -= 1
                if not self._waiting[batch.id]:
                    del self._waiting[batch.id]

    def _listing(self) -> list[Batch]:
        """Every batch the server lists for the prefix (all of them if it ignores it)."""
        out: list[Batch] = []
        after: str | None = None
        while True:
            page = self.client.list_batches(limit=self.PAGE, after=after, name_prefix=self.prefix)
            out += page.data
            if not page.has_more or not page.data:
                return out
            after = page.data[-1].id

    def _poll(self) -> None:
        interval = self.config.batch.poll_interval_s
        longest = self.config.batch.max_poll_interval_s
        while True:
            with self._cond:
                if not self._waiting or self._error is not None or not self._shared:
                    self._polling = False
                    return
            error: BaseException | None = None
            try:
                self.polls += 1
                listed = self._listing()
            except UnprocessableEntityError as exc:
                if self.PAGE != 100:
                    self.PAGE = 100  # a server whose pages are smaller
                    continue
                error = exc
            except BaseException as exc:
                error = exc
            if error is not None:  # every waiter raises it; no one polls on
                with self._cond:
                    self._error, self._polling = error, False
                    self._cond.notify_all()
                return
            found = {b.id: b for b in listed}
            with self._cond:
                if any(not b.name.startswith(self.prefix) for b in listed) or any(
                    i not in found for i in self._waiting
                ):
                    self._shared = False  # the server does not filter: poll one by one
                for batch_id in self._waiting:
                    if batch_id in found:
                        self._latest[batch_id] = found[batch_id]
                self._round += 1
                self._cond.notify_all()
            try:
                self._sleep(interval)
            except BaseException as exc:  # the run is stopping (JobAborted): every waiter ends
                with self._cond:
                    self._error, self._polling = exc, False
                    self._cond.notify_all()
                return
            interval = min(interval * 1.5, longest)
