"""Prefect tasks that talk to the Batch API (stages: submit, wait, collect), one per shard."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NONE

from tablebatch.api import Batch, BatchClient
from tablebatch.crash import crash_point
from tablebatch.jobs.build import Requests
from tablebatch.jobs.config import JobConfig
from tablebatch.jobs.submit import collect, submit_shard, wait_for
from tablebatch.jobs.timing import timed


@task(name="submit", cache_policy=NONE)
def submit_task(
    client: BatchClient,
    name: str,
    model: str,
    items: Requests,
    description: str,
    run: str = "",
) -> Batch:
    """Find or create the shard's batch, add what it lacks, and start it."""
    with timed(run, "submit"):
        batch, sent = submit_shard(client, name, model, items, description)
    logger = get_run_logger()
    if sent:
        logger.info("batch %s (%s): sent %d request(s), %s", batch.id, name, sent, batch.status)
    else:
        logger.info("batch %s (%s): found, nothing to send, %s", batch.id, name, batch.status)
    return batch


@task(name="wait", cache_policy=NONE)
def wait_task(client: BatchClient, batch: Batch, config: JobConfig, run: str = "") -> Batch:
    """Poll the batch until it ends, moving a progress artifact as it goes."""
    logger = get_run_logger()
    artifact = create_progress_artifact(
        progress=0.0, description=f"Batch {batch.id} ({batch.name}): requests ended"
    )

    def progress(current: Batch) -> None:
        ended = current.completed_count + current.failed_count + current.cancelled_count
        total = max(current.request_count, 1)
        update_progress_artifact(artifact, progress=100.0 * ended / total)
        if current.status == "processing":
            crash_point("polling")
        logger.info(
            "batch %s: %s, %d/%d done, %d failed",
            current.id,
            current.status,
            current.completed_count,
            current.request_count,
            current.failed_count,
        )

    with timed(run, "wait"):
        return wait_for(client, batch, config, on_progress=progress)


@task(name="collect", cache_policy=NONE)
def collect_task(
    client: BatchClient, batch: Batch, custom_ids: pa.ChunkedArray, run: str = ""
) -> pa.Table:
    """Every result of the finished batch, page by page, as a table."""
    with timed(run, "collect"):
        results = collect(client, batch, custom_ids.to_pylist())
    failed = pc.sum(pc.equal(results["status"], "failed")).as_py() or 0
    get_run_logger().info(
        "batch %s: collected %d result(s), %d failed", batch.id, results.num_rows, failed
    )
    return results
