"""Prefect tasks that join, write and report (stages: join, finish)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from tablebatch.io import write_table
from tablebatch.jobs.config import JobConfig
from tablebatch.jobs.results import ModelAnswers, build_report, join, report_markdown
from tablebatch.jobs.timing import add, take, timed


@task(name="join", cache_policy=NONE)
def join_task(
    table: pa.Table, config: JobConfig, per_model: list[ModelAnswers], run: str = ""
) -> pa.Table:
    """Answers joined onto the rows: every row once per model, in input order."""
    with timed(run, "join"):
        return join(table, config, per_model)


@task(name="write", cache_policy=NONE)
def write_task(
    config: JobConfig,
    table: pa.Table,
    output: pa.Table,
    path: str,
    batches: list[dict[str, Any]],
    run: str = "",
    elapsed: float = 0.0,
) -> dict[str, Any]:
    """Write the output atomically, then the report (a JSON file and Prefect artifacts)."""
    started = time.perf_counter()
    write_table(output, path)
    report = build_report(config, table, output, batches, path)
    add(run, "write", started, time.perf_counter())
    report["timings"] = take(run, elapsed + time.perf_counter() - started)
    if "://" not in path:
        Path(path + ".report.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    key = "".join(c if c.isalnum() else "-" for c in config.name.lower())
    create_markdown_artifact(report_markdown(report), key=f"{key}-report", description="Job report")
    rows = [{"status": k, "rows": v} for k, v in sorted(report["rows_by_status"].items())]
    if "per_model" in report:
        rows = [{"model": m, **v} for m, v in report["per_model"].items()]
    elif report.get("gold"):
        rows = [{"label": label, **m} for label, m in report["gold"]["per_label"].items()]
    create_table_artifact(rows, key=f"{key}-table", description="Job report, as a table")
    return report
