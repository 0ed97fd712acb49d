"""Summarization: ROUGE distributions, summary (and reference) lengths, and summary against
reference length."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import altair as alt
import numpy as np

from tablebatch.report import charts
from tablebatch.report.common import length_rows, word_counts
from tablebatch.report.kinds import KindReport, register
from tablebatch.report.page import Figure, Section, count, note, num, row, table_html
from tablebatch.report.run import Run

ROUGE = ("rouge1", "rouge2", "rougeL")
SCATTER_ROWS = 2_000


def figures(report: dict[str, Any]) -> list[Figure]:
    """Summaries, their mean length, and mean ROUGE-1/2/L when there is a reference."""
    lengths = report.get("summary_lengths", {})
    out = [
        Figure("summaries", "summaries", count(lengths.get("count", 0))),
        Figure("mean_words", "mean words", num(lengths.get("mean_words"), 1)),
    ]
    for name in ROUGE if report.get("rouge") else ():
        out.append(
            Figure(
                name,
                f"mean {name.upper().replace('ROUGEL', 'ROUGE-L')}",
                num(report["rouge"][name]),
            )
        )
    return out


def _lengths(run: Run) -> tuple[dict[str, np.ndarray], str]:
    """Word counts of every summary (and reference), streamed a batch at a time (of a large
    output, of a sample), and which rows they are."""
    reference = run.columns.get("reference")
    names = {"summary": "summary", reference: "reference"} if reference else {"summary": "summary"}
    out: dict[str, list[np.ndarray]] = {v: [] for v in names.values()}
    batches, how = length_rows(run, list(names))
    for batch in batches:
        for column, group in names.items():
            if column in batch.schema.names:
                out[group].append(word_counts(batch[column]))
    return {g: np.concatenate(v) if v else np.array([]) for g, v in out.items()}, how


def rouge_chart(run: Run) -> alt.TopLevelMixin | None:
    """ROUGE-1/2/L of every scored row, as overlaid histograms."""
    if not run.report.get("rouge") or not run.output.has(*ROUGE):
        return None
    table = run.output.read(list(ROUGE))
    groups = {n: table[n].to_numpy() for n in ROUGE}
    return charts.binned(groups, title="ROUGE F-measure", value_range=(0, 1))


def _scatter(run: Run) -> str:
    reference = run.columns.get("reference")
    if not reference or not run.output.has(reference, "summary"):
        return ""
    rows, how = run.output.sample(SCATTER_ROWS, ["summary", reference], seed=11)
    words = {"summary": word_counts(rows["summary"]), "reference": word_counts(rows[reference])}
    keep = ~(np.isnan(words["summary"]) | np.isnan(words["reference"]))
    data = [
        {"reference words": int(r), "summary words": int(s)}
        for s, r in zip(words["summary"][keep], words["reference"][keep], strict=True)
    ]
    chart = charts.scatter(
        data,
        "reference words",
        "summary words",
        title_x="reference (words)",
        title_y="summary (words)",
    )
    sampled = how if rows.num_rows < run.output.num_rows else ""
    return charts.figure(chart, "length_scatter", "Summary vs reference length", sampled)


def main_chart(run: Run) -> alt.TopLevelMixin | None:
    """ROUGE when scored, else summary lengths."""
    return rouge_chart(run) or charts.binned(
        {"summary": _lengths(run)[0]["summary"]}, title="words"
    )


def sections(run: Run) -> list[Section]:
    """The summarization section."""
    blocks = []
    rouge = rouge_chart(run)
    if rouge is not None:
        blocks.append(charts.figure(rouge, "rouge", "ROUGE distributions", "every scored row"))
    lengths, how = _lengths(run)
    blocks.append(charts.figure(charts.binned(lengths, title="words"), "lengths", "Lengths", how))
    blocks.append(_scatter(run))
    body = [row(*blocks)]
    if not run.report.get("rouge"):
        body.insert(0, note("No reference column: summaries are measured, not scored."))
    return [Section("summarization", "Summaries", figures(run.report), body)]


def deltas(runs: Sequence[Run]) -> list[Section]:
    """Mean ROUGE and length per run, and each run's difference from the first."""
    metrics = [("mean_words", "mean words")] + [(n, n) for n in ROUGE]

    def value(run: Run, key: str) -> float | None:
        if key == "mean_words":
            return run.report.get("summary_lengths", {}).get("mean_words")
        return (run.report.get("rouge") or {}).get(key)

    columns = ["metric", *[r.name for r in runs], *[f"Δ {r.name}" for r in runs[1:]]]
    rows = []
    for key, label in metrics:
        values = [value(r, key) for r in runs]
        diff = [
            None if v is None or values[0] is None else f"{v - values[0]:+.3f}" for v in values[1:]
        ]
        rows.append([label, *[num(v) for v in values], *diff])
    return [Section("deltas", "Metrics per run", [], [table_html(columns, rows, key="deltas")])]


register(
    KindReport(
        "summarization",
        figures,
        sections,
        main_chart=main_chart,
        answer="summary",
        deltas=deltas,
        extra_columns=("summary", "reference", "rougeL"),
    )
)
