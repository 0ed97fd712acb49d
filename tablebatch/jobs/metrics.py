"""Metrics for the report: classification against gold labels, summary lengths and ROUGE,
evaluation scores per model. Plain functions over lists, checked by hand in the tests."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def _safe_div(a: float, b: float) -> float:
    return a / b if b else 0.0


def classification_metrics(
    predicted: Sequence[str], gold: Sequence[str], labels: list[str], invalid: str
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-label precision/recall/F1 and a confusion matrix.

    ``predicted`` holds labels or ``invalid``; an invalid answer counts as wrong
    and has its own column in the matrix (rows: gold, columns: predicted).
    """
    columns = [*labels, invalid]
    matrix = {g: dict.fromkeys(columns, 0) for g in labels}
    for p, g in zip(predicted, gold, strict=True):
        matrix[g][p if p in matrix[g] else invalid] += 1
    total = len(gold)
    correct = sum(matrix[label][label] for label in labels)
    per_label = {}
    for label in labels:
        tp = matrix[label][label]
        predicted_as = sum(matrix[g][label] for g in labels)
        support = sum(matrix[label].values())
        precision = _safe_div(tp, predicted_as)
        recall = _safe_div(tp, support)
        f1 = _safe_div(2 * precision * recall, precision + recall)
        per_label[label] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": support,
        }
    return {
        "scored_rows": total,
        "accuracy": _safe_div(correct, total),
        "macro_f1": _safe_div(sum(m["f1"] for m in per_label.values()), len(labels)),
        "invalid_answers": sum(matrix[g][invalid] for g in labels),
        "per_label": per_label,
        "confusion_matrix": {"labels": columns, "rows": matrix},
    }


def length_stats(texts: Sequence[str]) -> dict[str, float]:
    """Word counts of texts: mean, median, min, max."""
    return word_stats([len(t.split()) for t in texts])


def word_stats(words: Sequence[int]) -> dict[str, float]:
    """Word counts: how many, mean, median, min, max."""
    if not words:
        return {"count": 0}
    return {
        "count": len(words),
        "mean_words": statistics.fmean(words),
        "median_words": statistics.median(words),
        "min_words": min(words),
        "max_words": max(words),
    }


_scorer = None


def rouge(summary: str, reference: str) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F-measures (Google's rouge-score, with stemming)."""
    global _scorer
    if _scorer is None:
        from rouge_score import rouge_scorer

        _scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = _scorer.score(reference, summary)
    return {name: score.fmeasure for name, score in scores.items()}


def mean(values: Sequence[float | None]) -> float | None:
    """The mean of the values that are not None (None if there are none)."""
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def evaluation_stats(scores: Sequence[float | None], pass_at: float = 1.0) -> dict[str, Any]:
    """Mean score and pass rate over scored answers; unscored ones are counted apart."""
    present = [s for s in scores if s is not None]
    return {
        "scored": len(present),
        "unscored": len(scores) - len(present),
        "mean_score": mean(present),
        "pass_rate": _safe_div(sum(1 for s in present if s >= pass_at), len(present))
        if present
        else None,
    }


def multilabel_metrics(
    predicted: Sequence[Sequence[str]], gold: Sequence[Sequence[str]], labels: list[str]
) -> dict[str, Any]:
    """Multi-label scores of label sets against gold sets: micro and macro F1, subset
    accuracy (the share of rows whose set is exactly right), Hamming loss (the share of
    row-label decisions that are wrong) and per-label precision, recall, F1 and support."""
    counts = {label: {"tp": 0, "fp": 0, "fn": 0} for label in labels}
    exact = wrong = 0
    for p, g in zip(predicted, gold, strict=True):
        p_set, g_set = set(p), set(g)
        exact += p_set == g_set
        wrong += len((p_set ^ g_set) & set(labels))
        for label in labels:
            if label in p_set and label in g_set:
                counts[label]["tp"] += 1
            elif label in p_set:
                counts[label]["fp"] += 1
            elif label in g_set:
                counts[label]["fn"] += 1
    per_label = {}
    for label, c in counts.items():
        precision = _safe_div(c["tp"], c["tp"] + c["fp"])
        recall = _safe_div(c["tp"], c["tp"] + c["fn"])
        per_label[label] = {
            "precision": precision,
            "recall": recall,
            "f1": _safe_div(2 * precision * recall, precision + recall),
            "support": c["tp"] + c["fn"],
        }
    tp = sum(c["tp"] for c in counts.values())
    fp = sum(c["fp"] for c in counts.values())
    fn = sum(c["fn"] for c in counts.values())
    micro_p, micro_r = _safe_div(tp, tp + fp), _safe_div(tp, tp + fn)
    rows = len(gold)
    return {
        "scored_rows": rows,
        "micro_f1": _safe_div(2 * micro_p * micro_r, micro_p + micro_r),
        "macro_f1": _safe_div(sum(m["f1"] for m in per_label.values()), len(labels)),
        "subset_accuracy": _safe_div(exact, rows),
        "hamming_loss": _safe_div(wrong, rows * len(labels)),
        "per_label": per_label,
    }
