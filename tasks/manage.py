"""Prefect tasks that look at and stop a job's batches (``tablebatch.jobs.manage``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from tablebatch.api import Batch, BatchAPI
from tablebatch.jobs.manage import CancelOutcome, cancel_batches, job_batches, job_open_batches


@task(name="find-batches", cache_policy=NONE)
def find_batches_task(client: BatchAPI, job: str) -> list[Batch]:
    """Every batch of the job on the API, newest first."""
    batches = job_batches(client, job)
    get_run_logger().info("%s: %d batch(es) on the API", job, len(batches))
    return batches


@task(name="find-open-batches", cache_policy=NONE)
def find_open_task(client: BatchAPI, job: str, older_than_s: float = 0.0) -> list[Batch]:
    """The job's batches that have not ended, created more than ``older_than_s`` ago."""
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
    found = [
        b
        for b in job_open_batches(client, job)
        if not older_than_s or (b.created_at is not None and b.created_at <= cutoff)
    ]
    get_run_logger().info("%s: %d open batch(es) to cancel", job, len(found))
    return found


@task(name="cancel-batches", cache_policy=NONE)
def cancel_task(client: BatchAPI, batches: list[Batch], wait_s: float = 300.0) -> CancelOutcome:
    """Cancel the batches and wait (up to ``wait_s``) until they are ``cancelled``."""
    outcome = cancel_batches(client, batches, timeout_s=wait_s)
    get_run_logger().info(
        "cancelled %d batch(es): %d row(s) answered (kept), %d stopped",
        len(outcome.batches),
        outcome.answered,
        outcome.stopped,
    )
    return outcome
