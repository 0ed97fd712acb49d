"""``tablebatch demo``: the Batch API calls of a job, one by one."""

from __future__ import annotations

import argparse
from typing import Any

from flows.cli.common import error


def cmd_demo(args: argparse.Namespace) -> int:
    """Send a sample table through the local server and print the answers; 2 when the
    config or its table cannot be read (the exit codes of every command)."""
    from tablebatch.jobs.config import load_config
    from tablebatch.jobs.errors import JobError

    try:
        load_config(args.config)  # the demo reads it plainly: first, the usual checks
    except JobError as exc:
        error(exc)
        return 2
    from flows.demo import run_demo

    try:
        return run_demo(args.config, rows=args.rows)
    except OSError as exc:
        error(f"{args.config}: {exc}")
        return 2


def add_parsers(sub: Any) -> None:
    """``demo``."""
    demo = sub.add_parser(
        "demo",
        help="run the sample job's rows through a local server and show the answers",
    )
    demo.add_argument("config", nargs="?", default="configs/review-sentiment.yaml")
    demo.add_argument("--rows", type=int, default=None, help="use only the first N rows")
    demo.set_defaults(handler=cmd_demo)
