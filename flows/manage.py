"""Managing jobs from Prefect: a job's status and its cancel as flows (to run from the UI
or on a schedule, e.g. a clean-up of batches left running), and the watch through which
a running job flow learns that its flow run was cancelled.

How a cancel in Prefect reaches a job flow (Prefect 3): setting a flow run to
Cancelling (the UI's Cancel, ``prefect flow-run cancel``, the API) makes the runner
that started it — a worker or ``serve`` — send SIGTERM to the flow's process group,
and SIGKILL 30 s later; ``RunGuard`` takes that SIGTERM. A flow started in-process
(``tablebatch run``) has no runner: nothing would stop it, so ``follow_cancellation``
polls the flow run's state and stops the run itself.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.clients import open_client
from tablebatch.api import BatchAPI
from tablebatch.jobs.guard import RunGuard
from tablebatch.jobs.manage import JobTarget, find_job
from tablebatch.jobs.status_view import batch_row, status_lines
from tasks.manage import cancel_task, find_batches_task, find_open_task

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# how often a running job looks at its flow run's state (seconds)
CANCEL_POLL_S = float(os.environ.get("TABLEBATCH_CANCEL_POLL_S", "5"))
log = logging.getLogger("tablebatch.flows")


@contextmanager
def follow_cancellation(guard: RunGuard, interval_s: float | None = None) -> Iterator[None]:
    """While the block runs, look at this flow run's state every ``interval_s`` (default
    ``CANCEL_POLL_S``); once it is Cancelling (or Cancelled), stop the run through
    ``guard``. Outside a flow run: nothing."""
    from prefect.context import FlowRunContext

    interval_s = CANCEL_POLL_S if interval_s is None else interval_s

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        yield
        return
    flow_run_id = context.flow_run.id
    done = threading.Event()

    def watch() -> None:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            while not done.wait(interval_s):
                try:
                    state = client.read_flow_run(flow_run_id).state
                except Exception as exc:  # the Prefect API may be away for a while
                    log.debug("could not read flow run %s: %s", flow_run_id, exc)
                    continue
                if state is not None and (state.is_cancelling() or state.is_cancelled()):
                    guard.abort("the flow run was cancelled in Prefect")
                    return

    # the copied context carries the Prefect settings (the API's URL) into the thread
    thread = threading.Thread(
        target=contextvars.copy_context().run,
        args=(watch,),
        name="tablebatch-cancel-watch",
        daemon=True,
    )
    thread.start()
    try:
        yield
    finally:
        done.set()


@contextmanager
def job_api(target: JobTarget) -> Iterator[tuple[BatchAPI, str]]:
    """A client for the job's API, opened as its runs open it (its provider, its key), and
    a description of it for people. A job with no API of its own (or ``base_url:
    local``) is looked up in the project's local server database, served here without
    processing: a running job's own server answers its batches. ``FileNotFoundError``
    when there is no such database (the job never ran from this project)."""
    api = target.config.api if target.config is not None else None
    if api is None or api.is_local:
        db = target.root / ".tablebatch" / "server.db"
        if not db.exists():
            raise FileNotFoundError(db)
        dialect = f", {api.provider} dialect" if api is not None and api.provider != "seed" else ""
        where = f"the local server ({db}{dialect})"
    else:
        where = api.base_url if api.provider == "seed" else f"{api.base_url} ({api.provider})"
    with open_client(target.config, target.root, process=False) as client:
        yield client, where


@flow(name="tablebatch-status")
def job_status(job: str) -> dict[str, Any]:
    """Show a job's batches on its API (status, counts, age, attempt, tokens) and the state
    of its output, as a table and a markdown artifact.

    Args:
        job: The job: a config (e.g. configs/review-sentiment.yaml, relative to the
            project root) or a job's name.
    """
    target = find_job(job, PROJECT_ROOT)
    with job_api(target) as (client, api):
        batches = find_batches_task(client, target.name)
        lines = status_lines(target, api, batches)
    key = "".join(c if c.isalnum() else "-" for c in target.name.lower())
    rows = [batch_row(b) for b in batches]
    if rows:
        create_table_artifact(rows, key=f"{key}-batches", description=lines[0])
    create_markdown_artifact(
        "```\n" + "\n".join(lines) + "\n```", key=f"{key}-status", description="Job status"
    )
    get_run_logger().info("\n".join(lines))
    return {"job": target.name, "api": api, "batches": rows, "lines": lines}


@flow(name="tablebatch-cancel")
def cancel_job(job: str, older_than_s: float = 0.0, wait_s: float = 300.0) -> dict[str, Any]:
    """Cancel a job's batches that have not ended, and wait until they are cancelled.

    Answered rows stay on the API: the next run of the job collects them and sends
    only the rest. On a schedule with ``older_than_s``, this is a clean-up: it stops
    only the batches that have run longer than that.

    Args:
        job: The job: a config (e.g. configs/review-sentiment.yaml, relative to the
            project root) or a job's name.
        older_than_s: Cancel only batches created more than this many seconds ago
            (0: all of the job's open batches).
        wait_s: How long to wait for the batches to be cancelled.
    """
    target = find_job(job, PROJECT_ROOT)
    with job_api(target) as (client, api):
        found = find_open_task(client, target.name, older_than_s)
        outcome = cancel_task(client, found, wait_s) if found else None
    batches = outcome.batches if outcome else []
    summary = {
        "job": target.name,
        "api": api,
        "cancelled": [b.id for b in batches],
        "answered": outcome.answered if outcome else 0,
        "stopped": outcome.stopped if outcome else 0,
        "not_ended": [b.id for b in outcome.not_ended] if outcome else [],
    }
    text = (
        f"{target.name}: cancelled {len(batches)} batch(es) on {api}: {summary['answered']} "
        f"row(s) answered (kept: the next run sends only the rest), {summary['stopped']} stopped"
    )
    if summary["not_ended"]:
        text += f"; still not ended after {wait_s:.0f} s: {', '.join(summary['not_ended'])}"
    key = "".join(c if c.isalnum() else "-" for c in target.name.lower())
    create_markdown_artifact(text, key=f"{key}-cancel", description="Job cancel")
    get_run_logger().info(text)
    return summary
