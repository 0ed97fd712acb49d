"""Seconds spent per stage of a run, summed over the tasks of each stage.

Tasks run in threads of one process; each adds its own time under the run's
token, and the flow takes the totals for the report (``timings``). ``client`` is
everything but waiting for the server: what tablebatch itself costs.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_runs: dict[str, Counter[str]] = {}


def add(run: str, stage: str, seconds: float) -> None:
    """Count ``seconds`` for ``stage`` of ``run``."""
    with _lock:
        _runs.setdefault(run, Counter())[stage] += seconds


@contextmanager
def timed(run: str, stage: str) -> Iterator[None]:
    """Count the time spent in the block for ``stage`` of ``run``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        add(run, stage, time.perf_counter() - start)


def take(run: str, total: float) -> dict[str, float]:
    """The stages of ``run`` (forgotten here), its wall time, and its client time."""
    with _lock:
        stages = dict(_runs.pop(run, Counter()))
    out = {stage: round(seconds, 3) for stage, seconds in stages.items()}
    out["client"] = round(sum(v for k, v in stages.items() if k != "wait"), 3)
    out["total"] = round(total, 3)
    return out
