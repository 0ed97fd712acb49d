"""Extraction: validity, and per field the fill rate, the values (enums, booleans), the
numeric range and, with gold columns, the accuracy — from the report JSON."""

from __future__ import annotations

from typing import Any

from tablebatch.report.kinds import KindReport, register
from tablebatch.report.page import Figure, Section, count, num, pct, table_html
from tablebatch.report.run import Run


def figures(report: dict[str, Any]) -> list[Figure]:
    """The validity rate and the invalid answers."""
    ex = report.get("extraction") or {}
    return [
        Figure("validity_rate", "valid answers", pct(ex.get("validity_rate"))),
        Figure("invalid", "invalid answers", count(ex.get("invalid", 0))),
    ]


def _shown(stats: dict[str, Any]) -> str:
    if stats.get("values"):
        return ", ".join(f"{k}: {v}" for k, v in stats["values"].items())
    if stats.get("range"):
        r = stats["range"]
        return f"{num(r['min'])} to {num(r['max'])}, mean {num(r['mean'])}"
    return ""


def sections(run: Run) -> list[Section]:
    """A row per field."""
    ex = run.report.get("extraction") or {}
    gold = ex.get("gold") or {}
    rows = [
        [
            name,
            pct(stats.get("fill_rate")),
            _shown(stats),
            pct(gold[name]["accuracy"]) if name in gold else "",
        ]
        for name, stats in (ex.get("fields") or {}).items()
    ]
    table = table_html(["field", "fill rate", "values / range", "accuracy"], rows, key="fields")
    return [Section("extraction", "Fields", figures(run.report), [table])]


register(KindReport("extraction", figures, sections, extra_columns=("answer",)))
