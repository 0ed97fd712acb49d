"""Generation: answer lengths and, with a reference, mean chrF, BLEU and ROUGE — from the
report JSON."""

from __future__ import annotations

from typing import Any

from tablebatch.report.kinds import KindReport, register
from tablebatch.report.page import Figure, Section, count, num
from tablebatch.report.run import Run


def figures(report: dict[str, Any]) -> list[Figure]:
    """Answers, their mean length, and the mean scores against the reference."""
    lengths = report.get("answer_lengths", {})
    out = [
        Figure("answers", "answers", count(lengths.get("count", 0))),
        Figure("mean_words", "mean words", num(lengths.get("mean_words"), 1)),
    ]
    scores = report.get("scores") or {}
    for key, label, digits in (("chrf", "mean chrF", 1), ("bleu", "mean BLEU", 1)):
        if key in scores:
            out.append(Figure(key, label, num(scores[key], digits)))
    if "rougeL" in scores:
        out.append(Figure("rougeL", "mean ROUGE-L", num(scores["rougeL"])))
    return out


def sections(run: Run) -> list[Section]:
    """The headline figures."""
    return [Section("generation", "Answers", figures(run.report), [])]


register(KindReport("generation", figures, sections, extra_columns=("answer", "reference")))
