"""The Prefect task that sends one shard: render, submit, wait, collect (one task a shard,
never one a row)."""

from __future__ import annotations

import pyarrow.compute as pc
from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from tablebatch.api import Batch, BatchAPI
from tablebatch.crash import crash_point
from tablebatch.io import release_memory
from tablebatch.jobs.submit import Shard, ShardOutcome, send_shard


def _shard_run_name() -> str:
    from prefect.runtime import task_run

    shard = task_run.parameters.get("shard")
    shard = shard.unquote() if hasattr(shard, "unquote") else shard  # sent quoted: not walked
    return shard.name if isinstance(shard, Shard) else "shard"


@task(name="shard", task_run_name=_shard_run_name, cache_policy=NONE)
def shard_task(client: BatchAPI, shard: Shard) -> ShardOutcome:
    """Render the shard's requests, find or create its batch and send what it lacks, wait
    for it to end and collect every result."""
    logger = get_run_logger()
    last_status: dict[str, str] = {}

    def on_progress(batch: Batch) -> None:
        if shard.progress is not None:
            shard.progress.update(batch)
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

    outcome = send_shard(client, shard, on_progress)
    release_memory()  # its renders and reads
    failed = pc.sum(pc.equal(outcome.results["status"], "failed")).as_py() or 0
    logger.info(
        "%s: %d request(s) sent now, %d result(s), %d failed",
        shard.name,
        outcome.sent,
        outcome.results.num_rows,
        failed,
    )
    return outcome
