"""The per-kind parts of a report, one module per kind, found by name.

A kind's module builds a ``KindReport`` and passes it to ``register``; every module in this
package is imported by ``kind_report``, so a new kind adds its report in one new file. A kind
with no module gets the parts every report has (status, failures, tokens, a sample).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import altair as alt

from tablebatch.report.page import Figure, Section
from tablebatch.report.run import Run


def _none(run: Run) -> None:
    return None


def _no_sections(runs: Sequence[Run]) -> list[Section]:
    return []


@dataclass(frozen=True)
class KindReport:
    """What a kind adds to a report.

    - ``figures``: its headline numbers, from the report JSON alone (also the compare
      page's metrics per run);
    - ``sections``: its charts and tables, from the run (JSON and output table);
    - ``main_chart``: the one chart for the Prefect UI (None: the status chart);
    - ``answer``: the output column that holds its answer (what the compare page checks
      for changes between runs);
    - ``deltas``: the compare page's per-label / per-field differences between runs.
    """

    name: str
    figures: Callable[[dict[str, Any]], list[Figure]]
    sections: Callable[[Run], list[Section]]
    main_chart: Callable[[Run], alt.TopLevelMixin | None] = _none
    answer: str = "answer"
    # the answer column of one run, where it depends on the run (multi-label: ``labels``)
    answer_of: Callable[[Run], str] | None = None
    deltas: Callable[[Sequence[Run]], list[Section]] = _no_sections
    # the columns a sample of rows shows after the inputs ("gold", "reference": those columns)
    extra_columns: tuple[str, ...] = ("answer",)

    def answer_in(self, run: Run) -> str:
        """The column that holds this run's answer."""
        return self.answer_of(run) if self.answer_of else self.answer


KINDS: dict[str, KindReport] = {}


def register(kind: KindReport) -> KindReport:
    """Make a kind's report known by its name."""
    KINDS[kind.name] = kind
    return kind


_loaded: list[bool] = []


def _load() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    _loaded.append(True)


def kind_report(name: str) -> KindReport:
    """The report of a kind (the parts every kind has, for a kind with no module)."""
    if not _loaded:  # every module, even when one was imported by itself before
        _load()
    return KINDS.get(name) or KindReport(name, lambda report: [], lambda run: [])
