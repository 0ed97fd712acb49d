"""Classification: the confusion matrix (with the invalid column), per-label precision /
recall / F1, answers against gold per label, and the invalid answers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import altair as alt
import pyarrow.compute as pc

from tablebatch.report import charts
from tablebatch.report.common import FAILED_ROWS
from tablebatch.report.kinds import KindReport, register
from tablebatch.report.page import Figure, Section, count, note, num, pct, row, table_html
from tablebatch.report.run import Run


def _multi(report: dict[str, Any]) -> dict[str, Any] | None:
    """The multi-label scores against gold (None: single-label, or no gold)."""
    multi = report.get("multi_label")
    return multi if multi and multi.get("per_label") is not None else None


def figures(report: dict[str, Any]) -> list[Figure]:
    """Accuracy, macro-F1 and invalid answers against gold (multi-label: micro/macro F1,
    subset accuracy, Hamming loss); label counts without gold."""
    multi = _multi(report)
    if multi:
        return [
            Figure("micro_f1", "micro-F1", pct(multi["micro_f1"])),
            Figure("macro_f1", "macro-F1", pct(multi["macro_f1"])),
            Figure("subset_accuracy", "subset accuracy", pct(multi["subset_accuracy"])),
            Figure("hamming_loss", "Hamming loss", num(multi["hamming_loss"])),
            Figure(
                "scored_rows",
                f"rows scored against {multi['gold_column']}",
                count(multi["scored_rows"]),
            ),
        ]
    gold = report.get("gold")
    if not gold:
        return [Figure(f"label:{k}", k, count(v)) for k, v in report.get("labels", {}).items()]
    return [
        Figure("accuracy", "accuracy", pct(gold["accuracy"])),
        Figure("macro_f1", "macro-F1", pct(gold["macro_f1"])),
        Figure("invalid_answers", "invalid answers", count(gold["invalid_answers"])),
        Figure(
            "scored_rows", f"rows scored against {gold['gold_column']}", count(gold["scored_rows"])
        ),
    ]


def confusion_chart(run: Run) -> alt.TopLevelMixin | None:
    """Gold (rows) against answer (columns), the invalid answers in the last column."""
    gold = run.report.get("gold")
    if not gold:
        return None
    matrix = gold["confusion_matrix"]
    data = [
        {"gold": g, "answer": a, "rows": n}
        for g, row in matrix["rows"].items()
        for a, n in row.items()
    ]
    return charts.heatmap(
        data,
        "answer",
        "gold",
        "rows",
        title_x="answer",
        title_y=f"gold ({gold['gold_column']})",
        order_x=matrix["labels"],
        order_y=list(matrix["rows"]),
    )


def _per_label_chart(gold: dict[str, Any]) -> alt.TopLevelMixin:
    data = [
        {"label": label, "metric": metric, "value": m[metric]}
        for label, m in gold["per_label"].items()
        for metric in ("precision", "recall", "f1")
    ]
    return charts.bars(
        data,
        "label",
        "value",
        color="metric",
        title_y="",
        sort=list(gold["per_label"]),
        domain=(0, 1),
    )


def _distribution_chart(report: dict[str, Any]) -> tuple[alt.TopLevelMixin, str]:
    gold = report.get("gold")
    if not gold:
        data = [{"label": k, "rows": v, "of": "answers"} for k, v in report["labels"].items()]
        return charts.bars(data, "label", "rows", color="of"), "all answered rows"
    matrix = gold["confusion_matrix"]
    data = [
        {"label": g, "rows": sum(row.values()), "of": "gold"} for g, row in matrix["rows"].items()
    ]
    data += [
        {"label": a, "rows": sum(row[a] for row in matrix["rows"].values()), "of": "answers"}
        for a in matrix["labels"]
    ]
    chart = charts.bars(data, "label", "rows", color="of", sort=matrix["labels"])
    return chart, f"the {gold['scored_rows']:,} rows scored against gold"


def _invalid_rows(run: Run) -> str:
    invalid = (
        run.columns.get("invalid_label")
        or ((run.report.get("gold") or {}).get("confusion_matrix", {}).get("labels", [None])[-1])
    )
    if not invalid or not run.output.has("label"):
        return ""
    shown = [c for c in (run.columns.get("id"), *run.columns.get("inputs", [])[:1]) if c]
    rows = run.output.first_where(
        lambda b: pc.equal(b["label"], invalid), ["label"], [*shown, "answer", "label"], FAILED_ROWS
    )
    if not rows.num_rows:
        return note(f"No answer was {invalid}: every answer is one of the labels.")
    values = [[r[c] for c in rows.column_names] for r in rows.to_pylist()]
    head = note(f"Answers that are none of the labels ({invalid}); the first {rows.num_rows}.")
    return head + table_html(rows.column_names, values, key="invalid")


def _multi_frequency_chart(report: dict[str, Any], multi: dict[str, Any]) -> str:
    """How often each label is given (every answered row) and is gold (the scored rows)."""
    labels = list(multi["per_label"])
    data = [{"label": k, "rows": v, "of": "answers"} for k, v in report["labels"].items()]
    data += [
        {"label": k, "rows": m["support"], "of": "gold"} for k, m in multi["per_label"].items()
    ]
    chart = charts.bars(data, "label", "rows", color="of", sort=labels)
    over = f"answers: every answered row; gold: the {multi['scored_rows']:,} rows scored"
    return charts.figure(chart, "distribution", "Label frequency: answers vs gold", over)


def _multi_table(multi: dict[str, Any]) -> str:
    rows = [
        [label, pct(m["precision"]), pct(m["recall"]), pct(m["f1"]), m["support"]]
        for label, m in multi["per_label"].items()
    ]
    columns = ["label", "precision", "recall", "F1", "support (gold rows)"]
    return table_html(columns, rows, key="per_label")


def multi_sections(run: Run) -> list[Section]:
    """Multi-label: per-label precision / recall / F1, label frequency answers vs gold."""
    report = run.report
    multi = _multi(report)
    if not multi:
        data = [{"label": k, "rows": v, "of": "answers"} for k, v in report["labels"].items()]
        chart = charts.bars(data, "label", "rows", color="of")
        body = [
            note("No gold column: labels are counted, not scored (any number a row)."),
            row(charts.figure(chart, "distribution", "Labels given", "every answered row")),
        ]
        return [Section("classification", "Labels (multi-label)", figures(report), body)]
    per_label = charts.figure(
        _per_label_chart(multi), "per_label", "Per-label precision, recall, F1"
    )
    body = [row(per_label, _multi_frequency_chart(report, multi)), _multi_table(multi)]
    return [Section("classification", "Labels (multi-label)", figures(report), body)]


def main_chart(run: Run) -> alt.TopLevelMixin | None:
    """The confusion matrix; multi-label: the per-label bars."""
    multi = _multi(run.report)
    return _per_label_chart(multi) if multi else confusion_chart(run)


def answer_of(run: Run) -> str:
    """``labels`` (a list a row) for a multi-label run, else ``label``."""
    return "labels" if "multi_label" in run.report or not run.output.has("label") else "label"


def sections(run: Run) -> list[Section]:
    """The classification section: matrix, per-label bars, distribution, invalid answers."""
    report = run.report
    if "multi_label" in report:
        return multi_sections(run)
    blocks = []
    confusion = confusion_chart(run)
    if confusion is not None:
        blocks.append(
            charts.figure(confusion, "confusion", "Confusion matrix", "rows: gold; columns: answer")
        )
        blocks.append(
            charts.figure(
                _per_label_chart(report["gold"]), "per_label", "Per-label precision, recall, F1"
            )
        )
    distribution, over = _distribution_chart(report)
    blocks.append(charts.figure(distribution, "distribution", "Labels: answers vs gold", over))
    body = [row(*blocks), _invalid_rows(run)]
    if not report.get("gold"):
        body.insert(0, note("No gold column: answers are counted, not scored."))
    return [Section("classification", "Labels", figures(report), body)]


def deltas(runs: Sequence[Run]) -> list[Section]:
    """Per-label F1 of every run, and each run's difference from the first."""
    golds = [r.report.get("gold") or _multi(r.report) for r in runs]
    if not all(golds):
        return []
    labels = list(dict.fromkeys(label for g in golds for label in g["per_label"]))
    columns = ["label", *[f"F1 {r.name}" for r in runs], *[f"Δ {r.name}" for r in runs[1:]]]
    rows = []
    for label in labels:
        f1 = [g["per_label"].get(label, {}).get("f1") for g in golds]
        diff = [
            None if f is None or f1[0] is None else f"{100 * (f - f1[0]):+.1f} pts" for f in f1[1:]
        ]
        rows.append([label, *[pct(f) for f in f1], *diff])
    data = [
        {"label": label, "run": r.name, "f1": g["per_label"].get(label, {}).get("f1", 0)}
        for r, g in zip(runs, golds, strict=True)
        for label in labels
    ]
    chart = charts.bars(data, "label", "f1", color="run", title_y="F1", sort=labels, domain=(0, 1))
    return [
        Section(
            "deltas",
            "Per-label F1",
            [],
            [
                row(charts.figure(chart, "deltas", "F1 per label and run")),
                table_html(columns, rows, key="deltas"),
            ],
        )
    ]


register(
    KindReport(
        "classification",
        figures,
        sections,
        main_chart=main_chart,
        answer="label",
        answer_of=answer_of,
        deltas=deltas,
        extra_columns=("answer", "label", "labels", "gold"),
    )
)
