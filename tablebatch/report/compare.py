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


def _as_text(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Answers as text: a list of labels joined by ", " (as a page shows a list)."""
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        return pc.binary_join(column.cast(pa.list_(pa.string())), ", ")
    return column.cast(pa.string())


def _digests(run: Run, key: list[str], answer: str) -> pa.Table:
    """The key of every row, its position and a digest of its answer (Python's string
    hash: compared within this process only). The answers are read a batch at a time and
    not kept — long answers of a million rows, of every run, would not fit — and only those
    of the rows shown are read again."""
    parts = []
    start = 0
    for batch in run.output.batches([*key, answer]):
        texts = _as_text(batch[answer]).to_pylist()
        digest = np.fromiter((hash(t or "") for t in texts), dtype=np.int64, count=len(texts))
        columns = {k: batch[k] for k in key}
        columns |= {"digest": digest, "row": np.arange(start, start + len(texts))}
        parts.append(pa.table(columns))
        start += len(texts)
    if not parts:
        return pa.table({**{k: pa.array([], pa.string()) for k in key}, "digest": [], "row": []})
    return pa.concat_tables(parts)


def _answers_at(run: Run, rows: list[int], answer: str) -> list[object]:
    """The answers of the rows at these positions, in this order."""
    if not rows:
        return []
    taken = run.output.take(rows, [answer])
    by_row = dict(zip(sorted(set(rows)), _as_text(taken[answer]).to_pylist(), strict=True))
    return [by_row[r] for r in rows]


def changed_rows(runs: Sequence[Run]) -> tuple[int, int, str]:
    """How many rows were matched, how many changed answer, and a table of the first 100.

    Only the key and a digest of the answer of every row are kept (joined in Arrow); the
    answers and the input text are read again for the rows shown."""
    kind = kind_report(runs[0].kind)
    answer = kind.answer_in(runs[0])
    key = _key(runs[0])
    joined = _digests(runs[0], key, answer).rename_columns([*key, "digest 0", "row 0"])
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
        other = _digests(run, key, answer).rename_columns([*key, f"digest {i}", f"row {i}"])
        joined = joined.join(other, key, join_type="inner", use_threads=False)
    matched = joined.num_rows
    differs = pa.array(np.zeros(matched, dtype=bool))
    for i in range(1, len(runs)):
        differs = pc.or_(differs, pc.not_equal(joined["digest 0"], joined[f"digest {i}"]))
    changed = joined.filter(differs)
    total = changed.num_rows
    changed = changed.sort_by("row 0").slice(0, CHANGED_ROWS)
    answers = [
        _answers_at(run, changed[f"row {i}"].to_pylist(), answer) for i, run in enumerate(runs)
    ]
    inputs = [c for c in runs[0].columns.get("inputs", []) if c != answer]
    text = next((c for c in inputs if runs[0].output.has(c)), None)
    rows_at = changed["row 0"].to_pylist()
    texts = runs[0].output.take(rows_at, [text])[text].to_pylist() if text else []
    keys = changed.select(key).to_pylist()
    columns = [*key, *(["input"] if text else []), *[r.name for r in runs]]
    rows = [
        [keys[n][k] for k in key] + ([texts[n]] if text else []) + [a[n] for a in answers]
        for n in range(changed.num_rows)
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
