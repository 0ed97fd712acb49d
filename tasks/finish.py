"""The Prefect task that joins, writes and reports (stages: join, write)."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from tablebatch.io import release_memory, table_writer
from tablebatch.jobs.config import JobConfig
from tablebatch.jobs.identity import with_keys
from tablebatch.jobs.join import join_chunks
from tablebatch.jobs.pipeline import JobOutcome
from tablebatch.jobs.prices import PriceTable
from tablebatch.jobs.report import build_report, report_columns, report_markdown, table_rows
from tablebatch.jobs.timing import Timings
from tablebatch.report.run import Run, columns_of


@task(name="write", cache_policy=NONE)
def write_task(
    config: JobConfig,
    table: pa.Table,
    outcome: JobOutcome,
    path: str,
    timings: Timings,
    elapsed: float = 0.0,
    prices: PriceTable | None = None,
) -> dict[str, Any]:
    """Join the answers onto the rows and write the output a chunk of rows at a time (the
    file appears whole, atomically), then the report (a JSON file and Prefect artifacts).
    Returns the report."""
    started = time.perf_counter()
    chunks = join_chunks(table, config, outcome.per_model)
    mark = time.perf_counter()
    chunk: pa.Table | None = next(chunks)
    timings.add("join", mark, time.perf_counter())
    slim: list[pa.Table] = []
    assert chunk is not None
    schema = with_keys(chunk.schema, config, [a.plan for a in outcome.per_model])  # next run's
    # each chunk is written in a thread of its own while the next is joined (both are
    # mostly Arrow, which lets go of the GIL): one chunk in flight, so memory holds two
    with table_writer(path, schema, chunk) as write, ThreadPoolExecutor(1) as writer:
        written: Future[None] | None = None
        while chunk is not None:
            if written is not None:
                written.result()  # a failed write fails the run here, the file unwritten
            written = writer.submit(_write, write, chunk, timings)
            slim.append(report_columns(chunk, config))
            mark = time.perf_counter()
            chunk = next(chunks, None)
            timings.add("join", mark, time.perf_counter())
        if written is not None:
            written.result()
    slim_table = pa.concat_tables(slim)
    for answers in outcome.per_model:  # the answers' texts, read back for the output
        if answers.spool is not None:
            answers.spool.forget()
    release_memory()  # the joined chunks
    report = build_report(
        config,
        table,
        slim_table,
        outcome.batches,
        path,
        outcome.requests,
        outcome.tokens,
        outcome.spend,
        prices,
    )
    del slim, slim_table  # before the charts: their engine may start now (flows/cli/jobs.py)
    report["timings"] = timings.take(elapsed + time.perf_counter() - started)
    charts = None
    if "://" not in path:
        report["columns"] = columns_of(config)  # so that `tablebatch report` can rebuild it
        Path(path + ".report.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        charts = html_report(report, path)
    key = "".join(c if c.isalnum() else "-" for c in config.name.lower())
    create_markdown_artifact(report_markdown(report), key=f"{key}-report", description="Job report")
    create_table_artifact(
        table_rows(report), key=f"{key}-table", description="Job report, as a table"
    )
    if charts is not None:
        create_markdown_artifact(charts[0], key=f"{key}-charts", description=charts[1])
    return report


def _write(write: Callable[[pa.Table], None], chunk: pa.Table, timings: Timings) -> None:
    with timings.timed("write"):
        write(chunk)


def html_report(report: dict[str, Any], path: str) -> tuple[str, str] | None:
    """Write ``<output>.report.html``; return the charts artifact (markdown, description). A chart
    that cannot be drawn costs the page, not the run (`tablebatch report` draws it again)."""
    try:
        # here, not at the top: the flow's import need not wait for altair (~0.2 s); the
        # CLI imports it while the batches run (flows/cli/jobs.py). In the try: a page
        # that cannot be drawn, its modules included, does not fail the run
        from tablebatch.report.build import artifact, write_html

        html = write_html(report, path)
        return artifact(Run.of(report, path), html)
    except Exception as exc:  # the output and the JSON are written: keep the run's result
        get_run_logger().warning(
            "the HTML report was not written (%s: %s)", type(exc).__name__, exc
        )
        return None
