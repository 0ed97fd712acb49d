"""Evaluation: each model's mean score with its 95% confidence interval, side by side; how
often the models agree; and the items every model failed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import altair as alt
import numpy as np

from tablebatch.report import charts
from tablebatch.report.common import FAILED_ROWS
from tablebatch.report.kinds import KindReport, register
from tablebatch.report.page import Figure, Section, note, num, pct, row, table_html
from tablebatch.report.run import Run

Z95 = 1.959964


def figures(report: dict[str, Any]) -> list[Figure]:
    """Each model's mean score and pass rate."""
    out = []
    for model, m in report.get("per_model", {}).items():
        out.append(Figure(f"mean_score:{model}", f"{model}: mean score", num(m["mean_score"])))
        out.append(Figure(f"pass_rate:{model}", f"{model}: pass rate", pct(m["pass_rate"])))
    return out


def interval(scores: np.ndarray) -> tuple[float, float, float]:
    """The mean of scores and its 95% confidence interval: Wilson's for 0/1 scores (right
    at 0% and 100% too), the normal approximation otherwise."""
    n = scores.size
    if not n:
        return math.nan, math.nan, math.nan
    mean = float(scores.mean())
    if np.isin(scores, (0.0, 1.0)).all():
        centre = (mean + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
        half = Z95 * math.sqrt(mean * (1 - mean) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
        return mean, max(0.0, centre - half), min(1.0, centre + half)
    half = Z95 * float(scores.std(ddof=1)) / math.sqrt(n) if n > 1 else 0.0
    return mean, mean - half, mean + half


def _scores(run: Run) -> dict[str, np.ndarray]:
    """Each model's scores in item order (NaN where unscored): the output holds every item
    once per model, in input order."""
    table = run.output.read(["model", "score"])
    models = table["model"].to_numpy(zero_copy_only=False)
    scores = table["score"].to_numpy(zero_copy_only=False).astype(float)
    return {m: scores[models == m] for m in run.report.get("models", [])}


def ci_chart(run: Run) -> alt.TopLevelMixin | None:
    """Mean score per model with its 95% CI."""
    if not run.output.has("model", "score"):
        return None
    data = []
    for model, scores in _scores(run).items():
        mean, lo, hi = interval(scores[~np.isnan(scores)])
        if not math.isnan(mean):
            data.append({"model": model, "mean": mean, "low": lo, "high": hi})
    return charts.interval_points(data, "mean", "low", "high", "model") if data else None


def _agreement(scores: dict[str, np.ndarray]) -> alt.TopLevelMixin | None:
    models = list(scores)
    if len(models) < 2 or len({v.size for v in scores.values()}) != 1:
        return None
    data = []
    for a in models:
        for b in models:
            both = ~(np.isnan(scores[a]) | np.isnan(scores[b]))
            same = (scores[a][both] >= 1) == (scores[b][both] >= 1)
            data.append({"a": a, "b": b, "agree": float(same.mean()) if both.any() else 0.0})
    return charts.heatmap(
        data, "b", "a", "agree", title_x="", title_y="", order_x=models, order_y=models, fmt=".0%"
    )


def _all_failed(run: Run, scores: dict[str, np.ndarray]) -> str:
    models = list(scores)
    if not models or len({v.size for v in scores.values()}) != 1:
        return ""
    passed = np.zeros(scores[models[0]].size, dtype=bool)
    for values in scores.values():
        passed |= np.nan_to_num(values, nan=0.0) >= 1
    items = np.flatnonzero(~passed)
    total = int(items.size)
    if not total:
        return note("No item was failed by every model.")
    k = len(models)
    first = items[:FAILED_ROWS]
    positions = [int(i) * k + j for i in first for j in range(k)]
    shown = [
        c
        for c in (
            run.columns.get("id"),
            *run.columns.get("inputs", [])[:1],
            run.columns.get("reference"),
        )
        if c
    ]
    rows = run.output.take(positions, [*shown, "model", "answer"]).to_pylist()
    table_rows = []
    for n in range(len(first)):
        group = rows[n * k : (n + 1) * k]
        by_model = {r["model"]: r["answer"] for r in group}
        table_rows.append([group[0].get(c) for c in shown] + [by_model.get(m) for m in models])
    head = note(f"{total:,} item(s) no model passed; the first {len(first)}.")
    return head + table_html([*shown, *models], table_rows, key="all_failed")


def sections(run: Run) -> list[Section]:
    """The evaluation section."""
    scoring = run.report.get("scoring", "")
    blocks = []
    ci = ci_chart(run)
    if ci is not None:
        blocks.append(
            charts.figure(ci, "scores", "Mean score per model", "with 95% confidence intervals")
        )
    scores = _scores(run) if run.output.has("model", "score") else {}
    agreement = _agreement(scores)
    if agreement is not None:
        blocks.append(
            charts.figure(
                agreement,
                "agreement",
                "Agreement between models",
                "share of items both pass or both fail",
            )
        )
    body = [row(*blocks), "<h3>Items every model failed</h3>", _all_failed(run, scores)]
    return [Section("evaluation", f"Scores ({scoring})", figures(run.report), body)]


def deltas(runs: Sequence[Run]) -> list[Section]:
    """Each model's mean score per run, and the difference from the first run."""
    models = list(dict.fromkeys(m for r in runs for m in r.report.get("per_model", {})))
    columns = ["model", *[r.name for r in runs], *[f"Δ {r.name}" for r in runs[1:]]]
    rows = []
    for model in models:
        values = [r.report.get("per_model", {}).get(model, {}).get("mean_score") for r in runs]
        diff = [
            None if v is None or values[0] is None else f"{v - values[0]:+.3f}" for v in values[1:]
        ]
        rows.append([model, *[num(v) for v in values], *diff])
    return [
        Section(
            "deltas", "Mean score per model and run", [], [table_html(columns, rows, key="deltas")]
        )
    ]


register(
    KindReport(
        "evaluation",
        figures,
        sections,
        main_chart=ci_chart,
        answer="answer",
        deltas=deltas,
        extra_columns=("model", "answer", "reference", "score"),
    )
)
