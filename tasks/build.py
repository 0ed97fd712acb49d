"""Prefect task that plans one request per row (stage: build); rendering waits for the
shard that sends it."""

from __future__ import annotations

import pyarrow as pa
from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from tablebatch.jobs.config import JobConfig
from tablebatch.jobs.identity import PriorOutput
from tablebatch.jobs.plan import Plan, plan_requests
from tablebatch.jobs.timing import Timings


@task(name="build", cache_policy=NONE)
def build_task(
    config: JobConfig,
    table: pa.Table,
    ids: pa.Array,
    model: str,
    timings: Timings | None = None,
    previous: str | None = None,
) -> Plan:
    """The rows to send to ``model`` and their custom_ids; rows with an empty prompt are
    skipped (rows whose request turns out too large are skipped when rendered). With
    ``previous`` (the job's output path), rows unchanged since that output keep their
    request ids from it instead of being rendered to learn them."""
    with (timings or Timings()).timed("build"):
        prior = PriorOutput.open(previous) if previous is not None else None
        plan = plan_requests(table, config, ids, model, prior=prior)
    get_run_logger().info(
        "%s: %d request(s) for %s, %d row(s) skipped, %d request id(s) known from the "
        "previous output",
        config.name,
        len(plan.rows),
        model,
        len(plan.skipped),
        plan.known,
    )
    return plan
