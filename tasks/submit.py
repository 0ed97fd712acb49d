"""The Prefect task that sends one shard: render, submit, wait, collect (one task a shard,
never one a row)."""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow.compute as pc
from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from tablebatch.api import Batch, BatchAPI
from tablebatch.crash import crash_point
from tablebatch.jobs.config import JobConfig
from tablebatch.jobs.progress import Progress
from tablebatch.jobs.spool import Spool
from tablebatch.jobs.submit import BatchWatcher, Sendable, ShardOutcome, send_shard


@task(name="shard", task_run_name="{name}", cache_policy=NONE)
def shard_task(
    client: BatchAPI,
    config: JobConfig,
    rows: Sendable,
    name: str,
    model: str,
    stage: str,
    attempt: int,
    existing: Mapping[str, Batch] | None = None,
    progress: Progress | None = None,
    watcher: BatchWatcher | None = None,
    spool: Spool | None = None,
    run: str = "",
) -> ShardOutcome:
    """Render the shard's requests, find or create its batch and send what it lacks, wait
    for it to end and collect every result."""
    logger = get_run_logger()
    last_status: dict[str, str] = {}

    def on_progress(batch: Batch) -> None:
        if progress is not None:
            progress.update(batch)
        if batch.status == "processing":
            crash_point("polling")
        if last_status.get(batch.id) != batch.status:  # a line per change of status, not per poll
            last_status[batch.id] = batch.status
            logger.info(
                "batch %s (%s): %s, %d/%d done, %d failed",
                batch.id,
                batch.name,
                batch.status,
                batch.completed_count,
                batch.request_count,
                batch.failed_count,
            )

    outcome = send_shard(
        client,
        config,
        rows,
        name,
        model,
        stage,
        attempt,
        existing,
        run,
        on_progress,
        watcher,
        spool,
    )
    results = outcome.results
    failed = pc.sum(pc.equal(results["status"], "failed")).as_py() or 0
    logger.info(
        "%s: %d request(s) sent now, %d result(s), %d failed",
        name,
        outcome.sent,
        results.num_rows,
        failed,
    )
    return outcome
