"""The parts every report has, whatever the kind: the run's header figures, rows by status,
tokens per attempt, the rows that failed (first 50) and a sample of rows to read."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tablebatch.jobs.cost import money  # as the run's summary line shows a cost
from tablebatch.report import charts
from tablebatch.report.page import Figure, Section, count, note, row, table_html
from tablebatch.report.run import Run

FAILED_ROWS = 50
SAMPLE_ROWS = 12
LENGTH_ROWS = 100_000  # rows whose words a length chart counts, at most


def shown_path(path: str) -> str:
    """A path as the page shows it: relative to the current folder when under it."""
    absolute = Path(path).resolve()
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


def when(run: Run) -> str:
    """When the run ended: the report's time, or the output file's."""
    stamp = run.report.get("finished_at")
    if stamp:
        return str(stamp)
    mtime = Path(run.output.path).stat().st_mtime
    return dt.datetime.fromtimestamp(mtime, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def header_figures(report: dict[str, Any]) -> list[Figure]:
    """Rows, requests, batches, tokens, cost (when known) and duration of a run."""
    tokens = report.get("tokens", {})
    batches = report.get("batches", [])
    figures = [
        Figure("input_rows", "input rows", count(report.get("input_rows"))),
        Figure("output_rows", "output rows", count(report.get("output_rows"))),
        Figure(
            "completed", "completed", count(report.get("rows_by_status", {}).get("completed", 0))
        ),
        Figure(
            "requests", "requests in batches", count(sum(b.get("requests", 0) for b in batches))
        ),
        Figure("batches", "batches", count(len(batches))),
        Figure("prompt_tokens", "prompt tokens", count(tokens.get("prompt"))),
        Figure("completion_tokens", "completion tokens", count(tokens.get("completion"))),
    ]
    requests = report.get("requests")  # {"sent": n, "found": m}, where the run counted them
    if isinstance(requests, dict):
        figures.append(Figure("requests_sent", "requests sent", count(requests.get("sent"))))
        reused = requests.get("found")
        figures.append(Figure("requests_reused", "reused (already on the API)", count(reused)))
    figures += cost_figures(report)
    total = report.get("timings", {}).get("total")
    if total is not None:
        figures.append(Figure("duration", "duration", f"{total:.1f} s"))
    return figures


# the report JSON's ``cost`` section (issue 17, ``tablebatch.jobs.report``): its key, the
# figure's key and label
COST = (
    ("this_run", "cost", "cost of this run"),
    ("this_run_realtime", "cost_realtime", "at real-time prices"),
    ("per_output_row", "cost_per_row", "cost per output row"),
    ("behind_output", "cost_behind_output", "cost behind the output"),
)


def cost_figures(report: dict[str, Any]) -> list[Figure]:
    """The run's cost, its real-time equivalent and its cost per output row, as the report
    JSON's ``cost`` section gives them; "unknown" where it gives none (no prices for the
    model, or a run from before costs were reported)."""
    cost = report.get("cost")
    if isinstance(cost, int | float) and not isinstance(cost, bool):
        cost = {"this_run": cost}
    if not isinstance(cost, dict):
        return [Figure("cost", "cost", "unknown")]
    currency = str(cost.get("currency") or "USD")
    figures = []
    for name, key, label in COST:
        value = cost.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            figures.append(Figure(key, label, money(float(value), currency)))
        elif key == "cost":  # this run's cost is always shown, known or not
            unpriced = ", ".join(cost.get("unknown") or [])
            figures.append(
                Figure(key, f"cost (no price for {unpriced})" if unpriced else "cost", "unknown")
            )
    return figures


def status_chart(report: dict[str, Any]) -> charts.alt.Chart:
    """Rows by status, as bars."""
    data = [{"status": k, "rows": v} for k, v in sorted(report["rows_by_status"].items())]
    return charts.bars(data, "status", "rows", title_y="rows").properties(width=260)


def length_rows(run: Run, columns: list[str]) -> tuple[Iterable[pa.RecordBatch], str]:
    """The rows a length chart counts the words of, and how they were chosen: every row, or
    of an output over ``LENGTH_ROWS`` rows a sample of that many (drawn from 8 row groups
    of a Parquet output): counting words is the dearest step of a report."""
    if run.output.num_rows <= LENGTH_ROWS:
        return run.output.batches(columns), "every row"
    rows, how = run.output.sample(LENGTH_ROWS, columns, seed=5, groups=8)
    return rows.to_batches(), how


def word_counts(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Words per text (NaN where none), counted in Arrow."""
    counted = pc.count_substring_regex(column, r"\S+")
    return counted.to_numpy(zero_copy_only=False).astype(float)


def _add(total: np.ndarray, counted: np.ndarray) -> np.ndarray:
    size = max(total.size, counted.size)
    return np.pad(total, (0, size - total.size)) + np.pad(counted, (0, size - counted.size))


def _tokens_chart(run: Run) -> str:
    """Prompt and completion tokens summed per attempt, a row group at a time."""
    columns = ["attempts", "prompt_tokens", "completion_tokens"]
    if not run.output.has(*columns):
        return ""
    rows = np.zeros(1)
    sums = {"prompt": np.zeros(1), "completion": np.zeros(1)}
    for batch in run.output.batches(columns):
        attempts = pc.fill_null(batch["attempts"], 0).to_numpy().astype(np.int64)
        rows = _add(rows, np.bincount(attempts))
        for part in sums:
            tokens = pc.fill_null(batch[f"{part}_tokens"], 0).to_numpy().astype(float)
            sums[part] = _add(sums[part], np.bincount(attempts, weights=tokens))
    data = [
        {"attempt": "not sent" if k == 0 else f"attempt {k}", "tokens": int(sums[p][k]), "part": p}
        for k in np.flatnonzero(rows)
        for p in sums
    ]
    if not data:
        return ""
    chart = charts.bars(data, "attempt", "tokens", color="part", title_x="rows answered on")
    return charts.figure(chart, "tokens", "Tokens per attempt")


def _input_columns(run: Run) -> list[str]:
    return [c for c in [run.columns.get("id"), *run.columns.get("inputs", [])] if c]


def failed_rows(run: Run) -> str:
    """The first rows that did not complete, with their errors."""
    if not run.output.has("status"):
        return ""
    shown = [*_input_columns(run)[:2], "status", "error", "attempts"]
    if run.output.has("model") and len(run.report.get("models", [])) > 1:
        shown.insert(1, "model")
    rows = run.output.first_where(
        lambda b: pc.not_equal(b["status"], "completed"), ["status"], shown, FAILED_ROWS
    )
    failed = sum(v for k, v in run.report["rows_by_status"].items() if k != "completed")
    if not rows.num_rows:
        return note("Every row completed.")
    head = note(f"{failed:,} row(s) did not complete; the first {rows.num_rows} are shown.")
    return head + _table(rows, "failed")


def sample_rows(run: Run, extra: tuple[str, ...]) -> str:
    """A few rows drawn at random (the same every time), to read."""
    shown = [*_input_columns(run), *extra]
    rows, how = run.output.sample(SAMPLE_ROWS, shown, seed=7)
    text = f"{how}." if run.output.num_rows > SAMPLE_ROWS else ""
    return (note(text) if text else "") + _table(rows, "sample")


def _table(rows: pa.Table, key: str) -> str:
    columns = rows.column_names
    values = [[r[c] for c in columns] for r in rows.to_pylist()]
    return table_html(columns, values, key=key)


def common_sections(run: Run, extra: tuple[str, ...]) -> tuple[Section, list[Section]]:
    """The overview (first) and the sections after the kind's (tokens, failures, sample)."""
    report = run.report
    status = Section(
        "overview",
        "Run",
        header_figures(report),
        [row(charts.figure(status_chart(report), "status", "Rows by status"))],
    )
    tail = [
        Section("tokens", "Tokens", [], [row(_tokens_chart(run))]),
        Section(
            "failed", f"Rows that did not complete (first {FAILED_ROWS})", [], [failed_rows(run)]
        ),
        Section("sample", "A sample of rows", [], [sample_rows(run, extra)]),
    ]
    return status, tail
