"""A job's side of the Batch API: submit a shard once, wait for it, collect its results.

Nothing here needs a local file to resume: a batch is found again by its
deterministic name, and a found batch receives only the requests it does not
hold yet. The API is the source of truth.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from tablebatch.api import Batch, BatchClient, ConflictError, UnprocessableEntityError
from tablebatch.crash import crash_point
from tablebatch.jobs.config import JobConfig

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


def _pages(client: BatchClient, batch_id: str) -> Any:
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


def collect(client: BatchClient, batch: Batch, custom_ids: list[str]) -> pa.Table:
    """Every result of a finished batch, as a table; requests with none get the batch's reason."""
    out: dict[str, list[Any]] = {name: [] for name in RESULT_SCHEMA.names}
    read = 0
    for page in _pages(client, batch.id):
        for result in page:
            _read(result, batch.id, out)
        read += len(page)
        if read >= 1000:
            crash_point("collecting")
    wanted = set(custom_ids)
    seen = set(out["custom_id"])
    missing = [c for c in custom_ids if c not in seen]
    if missing:
        if batch.status == "cancelled":
            reason = f"cancelled: batch {batch.id} was cancelled before this row was answered"
        elif batch.status == "failed":
            why = batch.error.message if batch.error else "no reason given"
            reason = f"batch_failed: batch {batch.id} failed: {why}"
        else:
            reason = f"missing: batch {batch.id} ({batch.status}) returned no result for this row"
        for custom_id in missing:
            for name, value in zip(
                RESULT_SCHEMA.names,
                (custom_id, "failed", None, reason, batch.id, 0, 0),
                strict=True,
            ):
                out[name].append(value)
    table = results_table(out)
    if len(seen - wanted):  # results for requests this shard did not send: not ours to keep
        table = table.filter(pc.is_in(table["custom_id"], value_set=pa.array(custom_ids)))
    return table
