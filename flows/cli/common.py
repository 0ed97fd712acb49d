"""What every command shares: how an error is printed, Prefect kept quiet, a run's summary."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any


def error(message: object) -> None:
    """Print ``error: message`` on stderr (the message says what to change)."""
    print(f"error: {message}", file=sys.stderr)


def quiet_prefect() -> None:
    """No telemetry from a machine that may have no internet (see PREFECT.md)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")


class _NoTraceback(logging.Filter):
    """Keeps the message of an expected error and drops its traceback from the terminal."""

    def __init__(self, expected: tuple[type[BaseException], ...]) -> None:
        super().__init__()
        self.expected = expected

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], self.expected):
            record.exc_info = None
            record.exc_text = None
        return True


def no_tracebacks_for(expected: tuple[type[BaseException], ...]) -> None:
    """Errors that tell the user what to change need no Python traceback on the terminal."""
    quiet = _NoTraceback(expected)
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(quiet)


def summary(report: dict[str, Any]) -> str:
    """The few lines a finished run prints: rows by status, tokens, its kind's headline
    metrics, where it wrote (``tablebatch.jobs.report.summary_text``; imported here, so
    that a command that prints no summary does not load the job code)."""
    from tablebatch.jobs.report import summary_text

    return summary_text(report)  # its second line: what this run sent, and what it reused
