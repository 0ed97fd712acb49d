"""Generation: answer (and reference) lengths, and with a reference the chrF / BLEU
(0–100) and ROUGE (0–1) distributions of every scored row and the answer against the
reference length (a sample)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import altair as alt
import numpy as np
import pyarrow.compute as pc

from tablebatch.report import charts
from tablebatch.report.common import length_rows, word_counts
from tablebatch.report.kinds import KindReport, register
from tablebatch.report.page import Figure, Section, count, note, num, row, table_html
from tablebatch.report.run import Run

SACREBLEU = ("chrf", "bleu")  # sacrebleu's 0–100 scale
ROUGE = ("rouge1", "rouge2", "rougeL")  # 0–1
LABELS = {
    "chrf": "chrF",
    "bleu": "BLEU",
    "rouge1": "ROUGE-1",
    "rouge2": "ROUGE-2",
    "rougeL": "ROUGE-L",
}
SCATTER_ROWS = 2_000


def figures(report: dict[str, Any]) -> list[Figure]:
    """Answers, their mean length, and the mean scores against the reference."""
    lengths = report.get("answer_lengths", {})
    out = [
        Figure("answers", "answers", count(lengths.get("count", 0))),
        Figure("mean_words", "mean words", num(lengths.get("mean_words"), 1)),
    ]
    scores = report.get("scores") or {}
    for key in (*SACREBLEU, *ROUGE):
        if key in scores:
            digits = 1 if key in SACREBLEU else 3
            out.append(Figure(key, f"mean {LABELS[key]}", num(scores[key], digits)))
    return out


def _lengths(run: Run) -> tuple[dict[str, np.ndarray], str]:
    """Word counts of every completed answer (and every reference), a batch at a time (of a
    large output, of a sample), and which rows they are."""
    reference = run.columns.get("reference")
    wanted = ["answer", "status", *([reference] if reference else [])]
    out: dict[str, list[np.ndarray]] = {"answer": [], "reference": []}
    batches, how = length_rows(run, wanted)
    for batch in batches:
        if "answer" in batch.schema.names:
            done = pc.equal(batch["status"], "completed")
            out["answer"].append(word_counts(batch["answer"].filter(done)))
        if reference and reference in batch.schema.names:
            out["reference"].append(word_counts(batch[reference]))
    return {g: np.concatenate(v) for g, v in out.items() if v}, how


def _scored(run: Run, names: Sequence[str]) -> dict[str, np.ndarray] | None:
    if not run.report.get("scores") or not run.output.has(*names):
        return None
    table = run.output.read(list(names))
    return {LABELS[n]: table[n].to_numpy(zero_copy_only=False).astype(float) for n in names}


def scores_chart(run: Run) -> alt.TopLevelMixin | None:
    """chrF and BLEU of every scored row, as overlaid histograms (0–100)."""
    groups = _scored(run, SACREBLEU)
    return None if groups is None else charts.binned(groups, title="score", value_range=(0, 100))


def _rouge_chart(run: Run) -> alt.TopLevelMixin | None:
    groups = _scored(run, ROUGE)
    if groups is None:
        return None
    return charts.binned(groups, title="ROUGE F-measure", value_range=(0, 1))


def _scatter(run: Run) -> str:
    reference = run.columns.get("reference")
    if not reference or not run.output.has(reference, "answer", "status"):
        return ""
    rows, how = run.output.sample(SCATTER_ROWS, ["answer", "status", reference], seed=11)
    rows = rows.filter(pc.equal(rows["status"], "completed"))
    answer, ref = word_counts(rows["answer"]), word_counts(rows[reference])
    keep = ~(np.isnan(answer) | np.isnan(ref))
    data = [
        {"reference words": int(r), "answer words": int(a)}
        for a, r in zip(answer[keep], ref[keep], strict=True)
    ]
    chart = charts.scatter(
        data,
        "reference words",
        "answer words",
        title_x=f"reference: {reference} (words)",
        title_y="answer (words)",
    )
    sampled = how if run.output.num_rows > SCATTER_ROWS else "every answered row"
    return charts.figure(chart, "length_scatter", "Answer vs reference length", sampled)


def main_chart(run: Run) -> alt.TopLevelMixin | None:
    """chrF / BLEU when scored, else the answer lengths."""
    scores = scores_chart(run)
    if scores is not None:
        return scores
    return charts.binned({"answer": _lengths(run)[0].get("answer", [])}, title="words")


def sections(run: Run) -> list[Section]:
    """The generation section."""
    blocks = []
    scores = scores_chart(run)
    if scores is not None:
        blocks.append(charts.figure(scores, "scores", "chrF and BLEU (0–100)", "every scored row"))
    rouge = _rouge_chart(run)
    if rouge is not None:
        blocks.append(charts.figure(rouge, "rouge", "ROUGE distributions", "every scored row"))
    lengths, how = _lengths(run)
    chart = charts.binned(lengths, title="words")
    blocks.append(charts.figure(chart, "lengths", "Lengths", f"answers and references: {how}"))
    blocks.append(_scatter(run))
    body = [row(*blocks)]
    if not run.report.get("scores"):
        body.insert(0, note("No reference column: answers are measured, not scored."))
    else:
        body.insert(0, note(f"Scored against {run.report.get('reference_column')}."))
    return [Section("generation", "Answers", figures(run.report), body)]


def deltas(runs: Sequence[Run]) -> list[Section]:
    """Mean length and scores per run, and each run's difference from the first."""

    def value(run: Run, key: str) -> float | None:
        if key == "mean_words":
            return run.report.get("answer_lengths", {}).get("mean_words")
        return (run.report.get("scores") or {}).get(key)

    metrics = [("mean_words", "mean words"), *[(k, LABELS[k]) for k in (*SACREBLEU, *ROUGE)]]
    columns = ["metric", *[r.name for r in runs], *[f"Δ {r.name}" for r in runs[1:]]]
    rows = []
    for key, label in metrics:
        values = [value(r, key) for r in runs]
        if all(v is None for v in values):
            continue
        digits = 3 if key in ROUGE else 1
        diff = [
            None if v is None or values[0] is None else f"{v - values[0]:+.{digits}f}"
            for v in values[1:]
        ]
        rows.append([label, *[num(v, digits) for v in values], *diff])
    blocks = [table_html(columns, rows, key="deltas")]
    data = [
        {"metric": LABELS[k], "run": r.name, "mean": value(r, k)}
        for r in runs
        for k in SACREBLEU
        if value(r, k) is not None
    ]
    if data:
        chart = charts.bars(data, "metric", "mean", color="run", title_y="mean (0–100)")
        blocks.insert(0, row(charts.figure(chart, "deltas", "Mean chrF and BLEU per run")))
    return [Section("deltas", "Metrics per run", [], blocks)]


register(
    KindReport(
        "generation",
        figures,
        sections,
        main_chart=main_chart,
        answer="answer",
        deltas=deltas,
        extra_columns=("answer", "reference", "chrf"),
    )
)
