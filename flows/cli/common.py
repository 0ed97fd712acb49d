"""What every command shares: how an error is printed, Prefect kept quiet, a run's summary,
the CONFIG|JOB argument."""

from __future__ import annotations

import dis
import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Any


def error(message: object) -> None:
    """Print ``error: message`` on stderr (the message says what to change)."""
    print(f"error: {message}", file=sys.stderr)


def quiet_prefect() -> None:
    """No telemetry from a machine that may have no internet (see PREFECT.md)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")


class _NoPandasForArrow:
    """An import hook that keeps pyarrow from importing pandas (``arrow_without_pandas``):
    it refuses ``pandas`` when native code asks for it (pyarrow's C++ and Cython), not
    when Python code imports it (an ``import`` statement, ``importlib.import_module``)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name != "pandas":
            return None
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename.startswith("<frozen importlib"):
            frame = frame.f_back
        if frame is None or frame.f_code.co_filename == importlib.__file__:
            return None  # importlib.import_module("pandas")
        code = frame.f_code.co_code
        if frame.f_lasti < len(code) and code[frame.f_lasti] == _IMPORT_NAME:
            return None  # import pandas
        raise ImportError("pandas is not loaded for pyarrow in a tablebatch run")


_IMPORT_NAME = dis.opmap["IMPORT_NAME"]


def arrow_without_pandas() -> None:
    """Keep pyarrow from importing pandas: its first conversion of a Python value
    (``pa.array``, ``pa.scalar``, a compute call given a Python scalar) imports pandas to
    look for pandas objects, ~0.15-0.3 s of a run's start, in series with everything else,
    for a library nothing in a run uses (tablebatch, Prefect and the report's charts hand
    pyarrow no pandas object). Python code that imports pandas still gets it."""
    if "pandas" in sys.modules or any(isinstance(f, _NoPandasForArrow) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _NoPandasForArrow())


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


def config_file(arg: str) -> Path:
    """CONFIG|JOB as a config file (a job's name is looked up in configs/ of the project
    here); says on stderr when it lies outside this project, and which folder its
    relative paths use."""
    from tablebatch.jobs.config import project_root
    from tablebatch.jobs.lookup import find_config
    from tablebatch.jobs.preflight import root_note

    path = find_config(arg, project_root(Path.cwd() / "CONFIG"))
    note = root_note(path)
    if note:
        print(f"note: {note}", file=sys.stderr)
    return path


CONFIG_HELP = "a job config (e.g. configs/review-sentiment.yaml) or a job's name in configs/"


def config_arguments(command: Any) -> None:
    """A command's CONFIG|JOB and its ``--set`` overrides (``run``, ``plan``)."""
    command.add_argument("config", metavar="CONFIG|JOB", help=CONFIG_HELP)
    command.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (dotted, YAML value), e.g. --set batch.max_requests=500",
    )
