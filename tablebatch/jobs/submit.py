"""A job's side of the Batch API: submit a shard once, wait for it, collect its results.

Nothing here needs a local file to resume: a batch is found again by its
deterministic name, and a found batch receives only the requests it does not
hold yet. The API is the source of truth.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import orjson

from tablebatch.api import Batch, BatchClient, BatchResult, ConflictError
from tablebatch.crash import crash_point
from tablebatch.jobs.config import JobConfig


@dataclass
class RowResult:
    """What became of one request: an answer, or an error."""

    status: str  # completed | failed
    answer: str | None
    error: str | None
    batch_id: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None


def batch_name(config: JobConfig, stage: str, fingerprint: str, attempt: int, shard: int) -> str:
    """The deterministic name of a shard's batch: how a re-run finds it again."""
    return f"{config.name}--{stage}-{fingerprint}--a{attempt}--s{shard:04d}"


def batch_description(config: JobConfig, model: str, stage: str, attempt: int, rows: int) -> str:
    """What the batch is, for a person reading the API's batch list."""
    return orjson.dumps(
        {"job": config.name, "stage": stage, "model": model, "attempt": attempt, "rows": rows}
    ).decode()


def claim_batch(client: BatchClient, name: str, model: str, description: str) -> Batch:
    """The batch named ``name``: the oldest one of that name, created if there is none.

    Two runs of the same job at once may both create one; each then lists the
    batches of that name and keeps the oldest, and the other cancels its own,
    still empty (so costing nothing). Both go on with the same batch.
    """
    existing = list(client.iter_batches(name=name))  # newest first
    if existing:
        return existing[-1]
    mine = client.create_batch(name, model=model, description=description)
    crash_point("after-create")
    oldest = list(client.iter_batches(name=name))[-1]
    if oldest.id != mine.id:
        client.cancel(mine.id)
    return oldest


def submit_shard(
    client: BatchClient,
    name: str,
    model: str,
    items: list[tuple[str, bytes]],
    description: str,
) -> tuple[Batch, int]:
    """Find or create the shard's batch, add what it lacks, start it; returns it and the
    number of requests sent now (0 when the batch already held them all)."""
    batch = claim_batch(client, name, model, description)
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
    client: BatchClient,
    batch: Batch,
    config: JobConfig,
    on_progress: Callable[[Batch], None] | None = None,
) -> Batch:
    """Poll a batch until it ends (``BatchClient.wait_for_batch`` with the job's settings)."""
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


def _row_result(result: BatchResult, batch_id: str) -> RowResult:
    if result.status == "completed" and result.response is not None:
        usage = result.response.usage
        choice = result.response.choices[0] if result.response.choices else None
        content = choice.message.content if choice is not None else None
        return RowResult(
            "completed" if content is not None else "failed",
            content,
            None if content is not None else "the response has no message content",
            batch_id,
            usage.prompt_tokens if usage else 0,
            usage.completion_tokens if usage else 0,
            choice.finish_reason if choice is not None else None,
        )
    error = result.error
    text = f"{error.type}: {error.message}" if error else "the request failed with no error"
    return RowResult("failed", None, text, batch_id)


def collect(client: BatchClient, batch: Batch, custom_ids: list[str]) -> dict[str, RowResult]:
    """Every result of a finished batch; requests with none get the batch's reason."""
    results: dict[str, RowResult] = {}
    for result in client.iter_results(batch.id, page_size=1000):
        results[result.custom_id] = _row_result(result, batch.id)
        if len(results) == 1000:
            crash_point("collecting")
    if len(results) < len(custom_ids):
        if batch.status == "cancelled":
            reason = f"cancelled: batch {batch.id} was cancelled before this row was answered"
        elif batch.status == "failed":
            why = batch.error.message if batch.error else "no reason given"
            reason = f"batch_failed: batch {batch.id} failed: {why}"
        else:
            reason = f"missing: batch {batch.id} ({batch.status}) returned no result for this row"
        for custom_id in custom_ids:
            if custom_id not in results:
                results[custom_id] = RowResult("failed", None, reason, batch.id)
    return {c: results[c] for c in custom_ids if c in results}
