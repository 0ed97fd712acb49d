"""Seconds spent per stage of a run, and the run's client time.

Tasks run in threads of one process and overlap; each records its interval in the
run's ``Timings``. ``take`` sums each stage's task time and works out ``client``:
the wall time of the run less the spans in which it only waited for the server
(a wait task running and no other stage), which is what tablebatch itself costs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


def _union(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _length(spans: list[tuple[float, float]]) -> float:
    return sum(end - start for start, end in spans)


def _minus(spans: list[tuple[float, float]], holes: list[tuple[float, float]]) -> float:
    """Length of ``spans`` outside ``holes`` (both merged)."""
    total = 0.0
    for start, end in spans:
        cut = start
        for h_start, h_end in holes:
            if h_end <= cut or h_start >= end:
                continue
            total += max(0.0, h_start - cut)
            cut = max(cut, h_end)
        total += max(0.0, end - cut)
    return total


class Timings:
    """The stage spans of one run, recorded from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[tuple[str, float, float]] = []

    def add(self, stage: str, start: float, end: float) -> None:
        """Record that ``stage`` ran from ``start`` to ``end`` (perf_counter)."""
        with self._lock:
            self._records.append((stage, start, end))

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Record the block as time spent in ``stage``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, start, time.perf_counter())

    def take(self, total: float) -> dict[str, float]:
        """Each stage's task seconds, the run's wall time (``total``) and ``client`` time;
        the records are forgotten."""
        with self._lock:
            records, self._records = self._records, []
        out: dict[str, float] = {}
        for stage, start, end in records:
            out[stage] = out.get(stage, 0.0) + end - start
        waits = _union([(s, e) for stage, s, e in records if stage == "wait"])
        work = _union([(s, e) for stage, s, e in records if stage != "wait"])
        only_waiting = _minus(waits, work)
        out = {stage: round(seconds, 3) for stage, seconds in out.items()}
        out["waiting_only"] = round(only_waiting, 3)
        out["client"] = round(max(0.0, total - only_waiting), 3)
        out["total"] = round(total, 3)
        return out
