"""The ``tablebatch`` command line.

    tablebatch run CONFIG [--set key=value ...]   run a job (a local server unless it names an API)
    tablebatch plan CONFIG [--set key=value ...]  what a run would send; sends nothing
    tablebatch validate CONFIG ...                check configs (and their data, when reachable)
    tablebatch status CONFIG|JOB                  a job's batches on its API, and its output
    tablebatch jobs [CONFIG|JOB] [--status S]     the jobs an API knows of, newest first
    tablebatch cancel CONFIG|JOB [--yes]          cancel a job's open batches, keep the answers
    tablebatch server [--port 8000] [--db PATH] [--backend offline|openai|llama] ...
    tablebatch demo [CONFIG]                      the Batch API calls of a job, one by one
    tablebatch report CONFIG|OUTPUT [--open]      a run's HTML report, built again (no API call)
    tablebatch compare A B ... [--out PATH]       runs of one table side by side, in one page

One module per command group (``jobs``, ``plan``, ``manage``, ``deploy``, ``server``,
``demo``, ``report``); each registers its commands with ``add_parsers`` (``plan``'s through
``jobs``', which keeps ``run``, ``plan``, ``validate`` in that order). The commands hold no
rules of their own: they parse, call the package, and print. Imports are kept inside the
commands, so that ``tablebatch server`` starts without loading Prefect.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from flows.cli import demo, deploy, jobs, manage, report, server


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``tablebatch``."""
    parser = argparse.ArgumentParser(
        prog="tablebatch", description="LLM batch jobs over tables, on Prefect."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (jobs, manage, deploy, server, demo, report):
        group.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tablebatch`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        return 130
