"""``tablebatch demo``: the Batch API calls of a job, one by one."""

from __future__ import annotations

import argparse
from typing import Any


def cmd_demo(args: argparse.Namespace) -> int:
    """Send a sample table through the local server and print the answers."""
    from flows.demo import run_demo

    return run_demo(args.config, rows=args.rows)


def add_parsers(sub: Any) -> None:
    """``demo``."""
    demo = sub.add_parser(
        "demo",
        help="run the sample job's rows through a local server and show the answers",
    )
    demo.add_argument("config", nargs="?", default="configs/review-sentiment.yaml")
    demo.add_argument("--rows", type=int, default=None, help="use only the first N rows")
    demo.set_defaults(handler=cmd_demo)
