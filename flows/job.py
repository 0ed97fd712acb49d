"""The job flow: a config in, the table with its answers joined on out, plus a report.

Stages (DESIGN.md): load → build → shard → submit → wait → collect → retry failed
rows (a follow-up batch per attempt) → join → write. The stages' logic is plain
Python in ``tablebatch.jobs``; this module wires Prefect's tasks into it. Each
shard is one task (render, submit, wait, collect), several at once; no task is
ever one row.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.states import Cancelled
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from flows.clients import open_client
from flows.manage import follow_cancellation
from flows.params import JobOverrides, config_file, run_name
from tablebatch.api import BatchAPI, WaitTimeoutError
from tablebatch.jobs.config import check_run_parameters, output_path
from tablebatch.jobs.errors import JobAborted, JobCancelled, JobFailed
from tablebatch.jobs.guard import RunGuard
from tablebatch.jobs.pipeline import JobRun, run_settings, run_stages, timeout_message
from tablebatch.jobs.prices import load_prices
from tablebatch.jobs.progress import Progress
from tablebatch.jobs.result_cache import ResultCache, cache_folder
from tablebatch.jobs.spool import Spool
from tablebatch.jobs.submit import Shard, StageRun
from tablebatch.jobs.timing import Timings
from tasks.build import build_task
from tasks.finish import write_task
from tasks.load import load_config_task, load_task
from tasks.submit import shard_task

PROGRESS_EVERY_S = 5.0  # the attempt's progress bar, at most this often

__all__ = ["JobOverrides", "batch_job"]


def _progress(run: StageRun, attempt: int, total: int) -> Progress:
    """One progress bar (a Prefect progress artifact) for all the batches of an attempt."""
    artifact = create_progress_artifact(
        progress=0.0,
        description=f"{run.config.name}: {run.stage} requests to {run.model}, attempt "
        f"{attempt}, ended",
    )

    def report(ended: int, total: int) -> None:
        update_progress_artifact(artifact, progress=100.0 * ended / max(total, 1))

    return Progress(
        total,
        report,
        every_s=PROGRESS_EVERY_S,
        job=run.config.name,
        stage=run.stage,
        model=run.model,
        attempt=attempt,
    )


def _send(client: BatchAPI, shard: Shard) -> Any:
    """Send a shard as a task (quoted: Prefect need not walk its rows and batches)."""
    return shard_task.submit(client, quote(shard))


@flow(
    name="tablebatch-job",
    flow_run_name=run_name,
    task_runner=ThreadPoolTaskRunner(max_workers=64),  # batch.concurrency bounds the shards
)
def batch_job(
    config: str,
    overrides: JobOverrides | None = None,
    settings: list[str] | None = None,
) -> dict[str, Any]:
    """Run an LLM batch job over a table, as a job config describes it.

    Args:
        config: The job config, e.g. configs/review-sentiment.yaml (relative to the
            project root).
        overrides: Changes for this run only; empty fields keep the config's values.
        settings: Further changes as key=value, like `tablebatch run --set`
            (e.g. batch.poll_interval_s=30).

    Returns the report, which is also written next to the output. A run that is stopped
    (Ctrl-C, a stop signal, a cancel in Prefect) ends Cancelled: calling the flow then
    raises ``JobCancelled`` (its batches cancelled, the answered rows written, with the
    report) or ``JobAborted`` (``batch.on_abort: keep``: its batches go on).
    """
    started, timings, logger = time.perf_counter(), Timings(), get_run_logger()
    updates = overrides.updates() if overrides is not None else None
    job, root = load_config_task(str(config_file(config)), settings, updates)
    check_run_parameters(job, root, updates, settings)
    table, ids = load_task(job, root, timings)
    path = output_path(job, root)
    prices = load_prices(Path(root), job)  # the package's, prices.yaml, the config's
    guard = RunGuard(job)  # Ctrl-C, a stop signal, a cancel in Prefect: batch.on_abort
    spool = Spool(Path(root) / ".tablebatch" / "spool" / uuid.uuid4().hex)  # answers on disk
    try:
        with (
            open_client(job, root, guard.sleep) as client,
            guard.protect(client),
            follow_cancellation(guard),
        ):
            local = job.api is None or job.api.is_local
            run = JobRun(
                client,
                run_settings(job, client.limits, local),
                guard,
                send=_send,
                spool=spool,
                timings=timings,
                cache=ResultCache(cache_folder(root, job.name)),
                progress_for=_progress,
                log=logger.info,
                prices=prices,
            )
            outcome = run_stages(
                run, table, lambda m: build_task(job, table, ids, m, timings, path)
            )
        elapsed = time.perf_counter() - started
        report = write_task(job, table, outcome, path, timings, elapsed, prices)
    except WaitTimeoutError as exc:
        raise JobFailed(timeout_message(job, exc, guard, config)) from None
    except JobAborted:  # batch.on_abort: keep — nothing to write, the batches go on
        error = JobAborted(guard.message(), signal=guard.signal)
        return Cancelled(message=str(error), data=error)  # calling the flow raises it
    finally:
        spool.remove()
    logger.info("%s: wrote %d row(s) to %s", job.name, report["output_rows"], path)
    if guard.aborted:
        message = f"{guard.message()} The output, with the answered rows: {path}"
        return Cancelled(message=message, data=JobCancelled(message, report, signal=guard.signal))
    if outcome.stopped:
        raise JobFailed(f"{job.name}: {outcome.stopped} The output, with the answered rows: {path}")
    return report
