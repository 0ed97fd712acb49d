"""``tablebatch report`` and ``compare``: a run's HTML report built again, and runs side by
side, from output tables and their report JSON (no API call, no Prefect)."""

from __future__ import annotations

import argparse
import webbrowser
from pathlib import Path
from typing import Any

from flows.cli.common import error

TABLES = (".parquet", ".csv")


def _run(arg: str, name: str = "") -> Any:
    """CONFIG|JOB|OUTPUT as a ``Run``: an output table, or the output of a job's config."""
    from tablebatch.jobs.config import project_root
    from tablebatch.jobs.manage import find_job
    from tablebatch.report.run import Run, columns_of
    from tablebatch.report.table import ReportInputError

    if Path(arg).suffix.lower() in TABLES:
        return Run.load(arg, name)
    target = find_job(arg, project_root(Path.cwd() / "CONFIG"))
    if target.config is None:
        raise ReportInputError(
            f"{arg}: not an output table (.parquet, .csv) nor a config or a job with one"
        )
    run = Run.load(target.output_path, name)
    run.columns = {**run.columns, **columns_of(target.config)}
    return run


def _open(path: Path) -> None:
    webbrowser.open(path.resolve().as_uri())


def cmd_report(args: argparse.Namespace) -> int:
    """Write ``<output>.report.html`` again and print its path."""
    from tablebatch.jobs.errors import JobError
    from tablebatch.report.build import write_html
    from tablebatch.report.table import ReportInputError

    try:
        run = _run(args.target)
        path = write_html({**run.report, "columns": run.columns}, run.output.path)
    except (ReportInputError, JobError) as exc:
        error(exc)
        return 2
    print(f"report: {path}")
    if args.open:
        _open(path)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Write the compare page of two or more runs and print its path."""
    from tablebatch.jobs.errors import JobError
    from tablebatch.report.compare import render_compare
    from tablebatch.report.table import ReportInputError

    try:
        runs = [_run(arg) for arg in args.targets]
        text = render_compare(runs)
    except (ReportInputError, JobError) as exc:
        error(exc)
        return 2
    if args.out:
        path = Path(args.out)
    else:
        stem = "--".join(r.name.replace(": ", "-") for r in runs)
        path = Path(runs[0].output.path).parent / f"compare--{stem}.html"
    path.write_text(text, encoding="utf-8")
    print(f"compare: {path}")
    if args.open:
        _open(path)
    return 0


def add_parsers(sub: Any) -> None:
    """``report`` and ``compare``."""
    text = "build a run's HTML report again from its output table and report JSON"
    report = sub.add_parser("report", help=text, description=text)
    report.add_argument(
        "target", metavar="CONFIG|OUTPUT", help="a job config (or name), or an output table"
    )
    report.add_argument("--open", action="store_true", help="open the report in a browser")
    report.set_defaults(handler=cmd_report)

    text = "runs of one table side by side in one HTML page (metrics, deltas, changed rows)"
    compare = sub.add_parser("compare", help=text, description=text)
    compare.add_argument("targets", nargs="+", metavar="CONFIG|OUTPUT", help="two or more runs")
    compare.add_argument("--out", help="where to write the page (default: beside the first output)")
    compare.add_argument("--open", action="store_true", help="open the page in a browser")
    compare.set_defaults(handler=cmd_compare)
