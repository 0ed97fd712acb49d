"""Prefect task that renders one request per row (stage: build)."""

from __future__ import annotations

import pyarrow as pa
from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from tablebatch.jobs.build import Plan, build_requests
from tablebatch.jobs.config import JobConfig
from tablebatch.jobs.timing import timed


@task(name="build", cache_policy=NONE)
def build_task(
    config: JobConfig,
    table: pa.Table,
    ids: list[str],
    model: str,
    keep_prompts: bool = False,
    run: str = "",
) -> Plan:
    """The requests for ``model``; rows with an empty or oversized request are skipped."""
    with timed(run, "build"):
        plan = build_requests(table, config, ids, model, keep_prompts=keep_prompts)
    logger = get_run_logger()
    logger.info(
        "%s: %d request(s) for %s, %d row(s) skipped",
        config.name,
        len(plan.items),
        model,
        len(plan.skipped),
    )
    return plan
