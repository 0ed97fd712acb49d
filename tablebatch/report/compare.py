"""Runs of one table side by side (two prompts, two models): headline metrics per run, the
kind's per-label / per-field differences, and the rows whose answer changed (first 100).

Rows are matched by the id column (and the model, for evaluation), so runs over a re-sorted
table compare right; only the id, the answer column and one input column are read.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tablebatch.report import charts
from tablebatch.report.common import header_figures, shown_path, when
from tablebatch.report.kinds import kind_report
from tablebatch.report.page import Section, note, page, row, table_html
from tablebatch.report.run import Run
from tablebatch.report.table import ReportInputError

CHANGED_ROWS = 100


def _names(runs: Sequence[Run]) -> None:
    """Give runs distinct names: the job's, else the output file's, else numbered."""
    for name in (lambda r: r.name, lambda r: Path(r.output.path).name.split(".")[0]):
        names = [name(r) for r in runs]
        if len(set(names)) == len(names):
            for run, n in zip(runs, names, strict=True):
                run.name = n
            return
    for i, run in enumerate(runs, 1):
        run.name = f"{i}: {run.name}"


def _metrics(runs: Sequence[Run]) -> str:
    """One row per run: its headline figures, each cell marked with its figure's key."""
    kind = kind_report(runs[0].kind)
    per_run = [[*header_figures(r.report), *kind.figures(r.report)] for r in runs]
    keys = list(dict.fromkeys(f.key for figures in per_run for f in figures))
    labels = {f.key: f.label for figures in per_run for f in figures}
    head = "".join(f"<th>{html.escape(labels[k])}</th>" for k in keys)
    body = ""
    for run, figures in zip(runs, per_run, strict=True):
        shown = {f.key: f.value for f in figures}
        cells = "".join(
            f'<td class="num" data-figure="{html.escape(k)}">{html.escape(shown.get(k, "–"))}</td>'
            for k in keys
        )
        body += (
            f'<tr data-run="{html.escape(run.name)}"><th>{html.escape(run.name)}</th>{cells}</tr>'
        )
    return (
        f'<table data-table="metrics"><thead><tr><th>run</th>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def _status_chart(runs: Sequence[Run]) -> str:
    data = [
        {"status": status, "rows": n, "run": r.name}
        for r in runs
        for status, n in sorted(r.report["rows_by_status"].items())
    ]
    chart = charts.bars(data, "status", "rows", color="run", title_y="rows")
    return charts.figure(chart, "status", "Rows by status, per run")


def _key(run: Run) -> list[str]:
    key = [run.columns.get("id")]
    if run.kind == "evaluation":
        key.append("model")
    if not all(key) or not run.output.has(*key):
        raise ReportInputError(
            f"{run.output.path}: no id column to match its rows by; rebuild its report from "
            "its config (tablebatch report CONFIG)"
        )
    return [k for k in key if k]


def _answers(run: Run, key: list[str], answer: str) -> pa.Table:
    """The key and the answer of every row, the answer as text (a list of labels joined by
    ", ", as a page shows a list)."""
    table = run.output.read([*key, answer])
    column = table[answer]
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        text = pc.binary_join(column.cast(pa.list_(pa.string())), ", ")
    else:
        text = column.cast(pa.string())
    return table.set_column(table.schema.get_field_index(answer), answer, text)


def changed_rows(runs: Sequence[Run]) -> tuple[int, int, str]:
    """How many rows were matched, how many changed answer, and a table of the first 100.

    Only the key and the answer of every row are read (joined in Arrow); the input text is
    read for the rows shown."""
    kind = kind_report(runs[0].kind)
    answer = kind.answer_in(runs[0])
    key = _key(runs[0])
    base = _answers(runs[0], key, answer)
    joined = base.rename_columns([*key, "answer 0"])
    joined = joined.append_column("row 0", pa.array(np.arange(base.num_rows)))
    for i, run in enumerate(runs[1:], 1):
        if _key(run) != key:
            raise ReportInputError(
                f"{run.output.path}: its rows are keyed by {_key(run)}, the first run's by {key}: "
                "compare runs of one table"
            )
        theirs = kind.answer_in(run)
        if theirs != answer:
            raise ReportInputError(
                f"{run.output.path}: its answers are in {theirs}, the first run's in {answer}: "
                "compare runs that answer alike (multi-label with multi-label)"
            )
        other = _answers(run, key, answer).rename_columns([*key, f"answer {i}"])
        joined = joined.join(other, key, join_type="inner", use_threads=False)
    matched = joined.num_rows
    differs = pa.array(np.zeros(matched, dtype=bool))
    first = pc.fill_null(joined["answer 0"], "")
    for i in range(1, len(runs)):
        other = pc.fill_null(joined[f"answer {i}"], "")
        differs = pc.or_(differs, pc.not_equal(first, other))
    changed = joined.filter(differs)
    total = changed.num_rows
    changed = changed.sort_by("row 0").slice(0, CHANGED_ROWS)
    inputs = [c for c in runs[0].columns.get("inputs", []) if c != answer]
    text = next((c for c in inputs if runs[0].output.has(c)), None)
    rows_at = changed["row 0"].to_pylist()
    texts = runs[0].output.take(rows_at, [text])[text].to_pylist() if text else []
    shown = changed.to_pylist()
    columns = [*key, *(["input"] if text else []), *[r.name for r in runs]]
    rows = [
        [r[k] for k in key]
        + ([texts[n]] if text else [])
        + [r[f"answer {i}"] for i in range(len(runs))]
        for n, r in enumerate(shown)
    ]
    return matched, total, table_html(columns, rows, key="changed")


def render_compare(runs: Sequence[Run]) -> str:
    """The compare page of two or more runs of one kind."""
    if len(runs) < 2:
        raise ReportInputError("compare needs two runs or more (outputs or configs)")
    kinds = {r.kind for r in runs}
    if len(kinds) > 1:
        named = ", ".join(f"{r.output.path} is {r.kind}" for r in runs)
        raise ReportInputError(f"compare runs of one kind: {named}")
    _names(runs)
    kind = kind_report(runs[0].kind)
    matched, total, table = changed_rows(runs)
    answer = kind.answer_in(runs[0])
    listing = "".join(
        f"<li>{html.escape(r.name)}: <code>{html.escape(shown_path(r.output.path))}</code> "
        f"({when(r)})</li>"
        for r in runs
    )
    sections = [
        Section(
            "runs",
            "Runs",
            [],
            [f"<ul>{listing}</ul>", _metrics(runs), row(_status_chart(runs))],
        ),
        *kind.deltas(runs),
        Section(
            "changed",
            f"Rows whose {answer} changed (first {CHANGED_ROWS})",
            [],
            [
                note(
                    f"{total:,} of {matched:,} matched rows have a different {answer} in some "
                    f"run; the first {min(total, CHANGED_ROWS)} are shown."
                ),
                table,
            ],
        ),
    ]
    title = " vs ".join(r.name for r in runs)
    return page(f"Compare: {title}", f"{runs[0].kind} · {len(runs)} runs", sections)
