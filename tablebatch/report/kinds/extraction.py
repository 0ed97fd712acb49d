"""Extraction: per field the fill rate and the validity (bars), the values of enum and
boolean fields (bars), the numeric ranges, and with gold columns the accuracy per field —
all from the report JSON but the per-field validity, which counts the fields the parse
errors of the invalid answers name (one column read)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import altair as alt
import pyarrow.compute as pc

from tablebatch.report import charts
from tablebatch.report.kinds import KindReport, register
from tablebatch.report.page import Figure, Section, count, note, num, pct, row, table_html
from tablebatch.report.run import Run


def _extraction(report: dict[str, Any]) -> dict[str, Any]:
    return report.get("extraction") or {}


def figures(report: dict[str, Any]) -> list[Figure]:
    """Valid answers, invalid answers, and each gold-scored field's accuracy."""
    ex = _extraction(report)
    out = [
        Figure("validity_rate", "valid answers", pct(ex.get("validity_rate"))),
        Figure("answered", "answered (valid)", count(ex.get("answered", 0))),
        Figure("invalid", "invalid answers", count(ex.get("invalid", 0))),
    ]
    for name, gold in (ex.get("gold") or {}).items():
        out.append(
            Figure(
                f"accuracy:{name}",
                f"{name}: accuracy vs {gold['gold_column']}",
                pct(gold.get("accuracy")),
            )
        )
    return out


def _field_of(problem: str, fields: Sequence[str]) -> str | None:
    """The field a parse error names (``severity: 'urgent' is not one of …``), if any."""
    match = re.match(r"([^:/\s]+)[:/]", problem)
    return match.group(1) if match and match.group(1) in fields else None


def field_validity(run: Run) -> dict[str, float | None]:
    """Per field, the share of the answers (valid or not) that break no rule of that field:
    an invalid answer counts against each field its parse error names (an answer that is
    not JSON at all, against every field)."""
    ex = _extraction(run.report)
    fields = list(ex.get("fields") or {})
    total = (ex.get("answered") or 0) + (ex.get("invalid") or 0)
    if not total:
        return dict.fromkeys(fields)
    broken: Counter[str] = Counter()
    if ex.get("invalid") and run.output.has("parse_error", "status"):
        for batch in run.output.batches(["status", "parse_error"]):
            errors = batch["parse_error"].filter(pc.equal(batch["status"], "invalid"))
            for problem in errors.to_pylist():
                named = {_field_of(p.strip(), fields) for p in (problem or "").split(";")}
                named.discard(None)
                broken.update(named or fields)  # not JSON, or no field named: all of them
    return {f: 1 - broken[f] / total for f in fields}


def fields_chart(run: Run) -> alt.TopLevelMixin | None:
    """Fill rate and validity per field, side by side, on 0–100%."""
    ex = _extraction(run.report)
    fields = ex.get("fields") or {}
    if not fields:
        return None
    validity = field_validity(run)
    data = []
    for name, stats in fields.items():
        if stats.get("fill_rate") is not None:
            data.append({"field": name, "measure": "filled", "share": stats["fill_rate"]})
        if validity.get(name) is not None:
            data.append({"field": name, "measure": "valid", "share": validity[name]})
    return charts.bars(
        data,
        "field",
        "share",
        color="measure",
        title_y="",
        sort=list(fields),
        domain=(0, 1),
        label_angle=-30,
    )


def _values_chart(name: str, values: dict[str, int]) -> str:
    data = [{"value": str(k), "rows": v} for k, v in values.items()]
    chart = charts.bars(data, "value", "rows", title_x=name, title_y="rows", sort=list(values))
    return charts.figure(
        chart.properties(width=max(140, 60 * len(values))),
        f"values:{name}",
        f"{name}: values",
        "every valid answer",
    )


def _accuracy_chart(gold: dict[str, Any]) -> str:
    data = [
        {"field": name, "accuracy": g["accuracy"]}
        for name, g in gold.items()
        if g.get("accuracy") is not None
    ]
    if not data:
        return ""
    chart = charts.bars(
        data,
        "field",
        "accuracy",
        title_y="accuracy",
        sort=list(gold),
        domain=(0, 1),
        label_angle=-30,
    ).properties(width=max(160, 90 * len(data)))
    scored = ", ".join(f"{n} {g['scored']:,}" for n, g in gold.items())
    return charts.figure(chart, "accuracy", "Accuracy per field, against gold", f"rows: {scored}")


def _shown(stats: dict[str, Any]) -> str:
    if stats.get("values"):
        return ", ".join(f"{k}: {v:,}" for k, v in stats["values"].items())
    if stats.get("range"):
        r = stats["range"]
        return f"{num(r['min'], 2)} to {num(r['max'], 2)}, mean {num(r['mean'], 2)}"
    return ""


def fields_table(run: Run) -> str:
    """A row per field: filled, fill rate, validity, values or range, accuracy."""
    ex = _extraction(run.report)
    gold = ex.get("gold") or {}
    validity = field_validity(run)
    rows = [
        [
            name,
            count(stats.get("filled")),
            pct(stats.get("fill_rate")),
            pct(validity.get(name)),
            _shown(stats),
            pct(gold[name]["accuracy"]) if name in gold else "",
        ]
        for name, stats in (ex.get("fields") or {}).items()
    ]
    columns = ["field", "filled", "fill rate", "valid", "values / range", "accuracy"]
    return table_html(columns, rows, key="fields")


def sections(run: Run) -> list[Section]:
    """The extraction section: fields chart, value distributions, accuracy, the table."""
    ex = _extraction(run.report)
    blocks = []
    chart = fields_chart(run)
    if chart is not None:
        blocks.append(
            charts.figure(chart, "fields", "Fill rate and validity per field", "all answers")
        )
    gold = ex.get("gold") or {}
    if gold:
        blocks.append(_accuracy_chart(gold))
    for name, stats in (ex.get("fields") or {}).items():
        if stats.get("values"):
            blocks.append(_values_chart(name, stats["values"]))
    body = [row(*blocks), fields_table(run)]
    if not gold:
        body.insert(0, note("No gold_columns: fields are counted, not scored."))
    return [Section("extraction", "Fields", figures(run.report), body)]


def deltas(runs: Sequence[Run]) -> list[Section]:
    """Per field, fill rate and accuracy of every run and each run's difference from the
    first (in percentage points)."""
    exs = [_extraction(r.report) for r in runs]
    fields = list(dict.fromkeys(f for ex in exs for f in ex.get("fields") or {}))
    scored = any(ex.get("gold") for ex in exs)

    def points(values: list[float | None]) -> list[str | None]:
        return [
            None if v is None or values[0] is None else f"{100 * (v - values[0]):+.1f} pts"
            for v in values[1:]
        ]

    columns = ["field", *[f"filled {r.name}" for r in runs], *[f"Δ {r.name}" for r in runs[1:]]]
    if scored:
        columns += [f"accuracy {r.name}" for r in runs] + [f"Δ acc {r.name}" for r in runs[1:]]
    rows, data = [], []
    for name in fields:
        fill = [(ex.get("fields") or {}).get(name, {}).get("fill_rate") for ex in exs]
        line: list[Any] = [name, *[pct(v) for v in fill], *points(fill)]
        if scored:
            acc = [(ex.get("gold") or {}).get(name, {}).get("accuracy") for ex in exs]
            line += [*[pct(v) for v in acc], *points(acc)]
            data += [
                {"field": name, "run": r.name, "accuracy": a}
                for r, a in zip(runs, acc, strict=True)
                if a is not None
            ]
        rows.append(line)
    blocks = [table_html(columns, rows, key="deltas")]
    if data:
        chart = charts.bars(
            data,
            "field",
            "accuracy",
            color="run",
            title_y="accuracy",
            domain=(0, 1),
            label_angle=-30,
        )
        blocks.insert(0, row(charts.figure(chart, "deltas", "Accuracy per field and run")))
    validity = [(ex.get("validity_rate")) for ex in exs]
    head = note(
        "Valid answers: "
        + ", ".join(f"{r.name} {pct(v)}" for r, v in zip(runs, validity, strict=True))
        + "."
    )
    return [Section("deltas", "Per-field fill rate and accuracy", [], [head, *blocks])]


register(
    KindReport(
        "extraction",
        figures,
        sections,
        main_chart=fields_chart,
        answer="answer",
        deltas=deltas,
        extra_columns=("answer", "parse_error"),
    )
)
