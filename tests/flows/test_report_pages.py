"""The HTML reports of real runs of the sample jobs, opened in headless Chromium: the charts
are drawn (non-zero size), the figures on the page are the report JSON's, and the page asks
the network for nothing. Also the compare page, `tablebatch report` rebuilding a page, and
the charts artifact."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest

from flows.cli import main
from flows.job import batch_job
from tests.browser import chromium

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = (
    "review-sentiment",
    "article-summaries",
    "quiz-eval",
    "ticket-extraction",
    "ticket-tags",
    "faq-translation",
)
NEUTRAL = 'prompt.template="Is this review positive, negative or neutral?\\n\\n{text}"'
# ticket-tags again, with a shorter prompt and no example (so that some tags change)
PLAIN_TAGS = [
    'prompt.template="Tag this ticket with the labels that apply: {labels}\\n\\n{text}"',
    "examples=[]",
    "output.path=data/output/ticket-tags-plain.parquet",
]
CHARTS = {  # by config
    "review-sentiment": {"status", "confusion", "per_label", "distribution", "tokens"},
    "article-summaries": {"status", "rouge", "lengths", "length_scatter", "tokens"},
    "quiz-eval": {"status", "scores", "agreement", "tokens"},
    "ticket-extraction": {
        "status",
        "fields",
        "accuracy",
        "values:severity",
        "values:refund_requested",
        "tokens",
    },
    "ticket-tags": {"status", "per_label", "distribution", "tokens"},
    "faq-translation": {"status", "scores", "rouge", "lengths", "length_scatter", "tokens"},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The three sample jobs run on a copy of the project, and review-sentiment once more
    with a prompt that offers a third answer (so that some answers change)."""
    root = tmp_path_factory.mktemp("project")
    (root / "pyproject.toml").write_text("")
    for name in ("configs", "data"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("output"))
    reports = {name: batch_job(str(root / "configs" / f"{name}.yaml")) for name in CONFIGS}
    neutral = "output.path=data/output/review-sentiment-neutral.parquet"
    reports["neutral"] = batch_job(
        str(root / "configs/review-sentiment.yaml"), settings=[NEUTRAL, neutral]
    )
    reports["tags-plain"] = batch_job(str(root / "configs/ticket-tags.yaml"), settings=PLAIN_TAGS)
    return {"root": root, "reports": reports}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as new_page:
        yield new_page


def _expected_figures(report: dict[str, Any]) -> dict[str, str]:
    """What the page must show for the report, formatted here (not by the page's code)."""
    tokens = report["tokens"]
    out = {
        "input_rows": f"{report['input_rows']:,}",
        "output_rows": f"{report['output_rows']:,}",
        "completed": f"{report['rows_by_status'].get('completed', 0):,}",
        "requests": f"{sum(b['requests'] for b in report['batches']):,}",
        "batches": f"{len(report['batches']):,}",
        "prompt_tokens": f"{tokens['prompt']:,}",
        "completion_tokens": f"{tokens['completion']:,}",
        "duration": f"{report['timings']['total']:.1f} s",
    }
    if isinstance(report.get("requests"), dict):  # what the run sent, and found on the API
        out["requests_sent"] = f"{report['requests']['sent']:,}"
        out["requests_reused"] = f"{report['requests']['found']:,}"
    if report.get("gold"):
        gold = report["gold"]
        out |= {
            "accuracy": f"{100 * gold['accuracy']:.1f}%",
            "macro_f1": f"{100 * gold['macro_f1']:.1f}%",
            "invalid_answers": str(gold["invalid_answers"]),
            "scored_rows": str(gold["scored_rows"]),
        }
    if report.get("rouge"):
        out |= {k: f"{v:.3f}" for k, v in report["rouge"].items()}
        out["mean_words"] = f"{report['summary_lengths']['mean_words']:.1f}"
    cost = report.get("cost")  # issue 17's section; "unknown" where it has no figure
    if not isinstance(cost, dict) or cost.get("this_run") is None:
        out["cost"] = "unknown"
    for name, key in (
        ("this_run", "cost"),
        ("this_run_realtime", "cost_realtime"),
        ("per_output_row", "cost_per_row"),
    ):
        value = cost.get(name) if isinstance(cost, dict) else None
        if value is not None:  # dollars: cents from $1, else 4 decimals, 6 under a cent
            places = 2 if value == 0 or value >= 1 else 4 if value >= 0.01 else 6
            assert cost["currency"] == "USD"
            out[key] = f"${value:,.{places}f}"
    if report.get("extraction"):
        ex = report["extraction"]
        out |= {
            "validity_rate": f"{100 * ex['validity_rate']:.1f}%",
            "answered": f"{ex['answered']:,}",
            "invalid": f"{ex['invalid']:,}",
        }
        for name, g in (ex.get("gold") or {}).items():
            out[f"accuracy:{name}"] = f"{100 * g['accuracy']:.1f}%"
    if report.get("answer_lengths"):
        out["answers"] = f"{report['answer_lengths']['count']:,}"
        out["mean_words"] = f"{report['answer_lengths']['mean_words']:.1f}"
        for name, v in (report.get("scores") or {}).items():
            out[name] = f"{v:.1f}" if name in ("chrf", "bleu") else f"{v:.3f}"
    if report.get("multi_label"):
        multi = report["multi_label"]
        out |= {k: f"{100 * multi[k]:.1f}%" for k in ("micro_f1", "macro_f1", "subset_accuracy")}
        out["hamming_loss"] = f"{multi['hamming_loss']:.3f}"
        out["scored_rows"] = f"{multi['scored_rows']:,}"
    for model, m in report.get("per_model", {}).items():
        out[f"mean_score:{model}"] = f"{m['mean_score']:.3f}"
        out[f"pass_rate:{model}"] = f"{100 * m['pass_rate']:.1f}%"
    return out


FIGURES_JS = """Object.fromEntries([...document.querySelectorAll('[data-figure]')].map(
  e => [e.dataset.figure, (e.querySelector('.value') || e).textContent.trim()]))"""
CHARTS_JS = """Object.fromEntries([...document.querySelectorAll('figure.chart')].map(f => {
  const r = f.querySelector('svg').getBoundingClientRect();
  return [f.dataset.chart, [r.width, r.height]] }))"""


def _open(page: Any, path: Path, shot: Path) -> dict[str, Any]:
    page.events.clear()
    page.goto(path.as_uri())
    figures = page.evaluate(FIGURES_JS)
    charts = page.evaluate(CHARTS_JS)
    page.screenshot(shot)
    return {"figures": figures, "charts": charts, "requests": page.requests()}


def _offline(requests: list[str], path: Path) -> None:
    """The only request a page makes is for itself."""
    assert requests, "no request was recorded at all: the recording is broken"
    assert set(requests) == {path.as_uri()}, requests
    text = path.read_text(encoding="utf-8")
    assert "<script" not in text and "<link" not in text and "http://" not in text.split("<svg")[0]


@pytest.mark.parametrize("name", CONFIGS)
def test_each_kind_report_renders_in_chromium(runs, browser, tmp_path, name) -> None:
    report = runs["reports"][name]
    html = Path(report["output"] + ".report.html")
    shown = _open(browser(), html, tmp_path / f"{name}.png")

    assert (tmp_path / f"{name}.png").stat().st_size > 20_000  # a screenshot of a real page
    assert CHARTS[name] <= set(shown["charts"]), shown["charts"]
    for key, (width, height) in shown["charts"].items():
        assert width > 50 and height > 50, (key, width, height)
    expected = _expected_figures(report)
    assert {k: shown["figures"].get(k) for k in expected} == expected
    _offline(shown["requests"], html)


def test_the_confusion_matrix_shows_the_reports_counts(runs, browser) -> None:
    report = runs["reports"]["neutral"]
    page = browser()
    page.goto(Path(report["output"] + ".report.html").as_uri())
    texts = page.evaluate(
        "[...document.querySelectorAll('[data-chart=confusion] svg text')].map(t => t.textContent)"
    )
    matrix = report["gold"]["confusion_matrix"]
    assert matrix["labels"][-1] == "INVALID" and "INVALID" in texts  # the invalid column
    cells = [str(n) for row in matrix["rows"].values() for n in row.values()]
    numbers = [t for t in texts if t.isdigit()]
    assert sorted(numbers[-len(cells) :]) == sorted(cells)  # the cells, after the axis ticks
    assert report["gold"]["invalid_answers"] >= 1
    invalid_rows = page.evaluate(
        "document.querySelectorAll('[data-table=invalid] tbody tr').length"
    )
    assert invalid_rows == report["gold"]["invalid_answers"]


def test_the_compare_page_shows_both_runs_and_the_changed_rows(runs, browser, tmp_path) -> None:
    root, reports = runs["root"], runs["reports"]
    out = tmp_path / "compare.html"
    first, second = reports["review-sentiment"], reports["neutral"]
    assert main(["compare", first["output"], second["output"], "--out", str(out)]) == 0

    page = browser()
    shown = _open(page, out, tmp_path / "compare.png")
    assert {"status", "deltas"} <= set(shown["charts"])
    assert all(w > 50 and h > 50 for w, h in shown["charts"].values())
    per_run = page.evaluate(
        """Object.fromEntries([...document.querySelectorAll('[data-table=metrics] tr[data-run]')]
        .map(r => [r.dataset.run, Object.fromEntries([...r.querySelectorAll('[data-figure]')]
        .map(c => [c.dataset.figure, c.textContent])) ]))"""
    )
    assert set(per_run) == {"review-sentiment", "review-sentiment-neutral"}
    for name, report in (("review-sentiment", first), ("review-sentiment-neutral", second)):
        expected = _expected_figures(report)
        assert {k: per_run[name].get(k) for k in expected} == expected

    a = pq.read_table(first["output"], columns=["review_id", "label"]).to_pylist()
    b = {r["review_id"]: r["label"] for r in pq.read_table(second["output"]).to_pylist()}
    changed = [r["review_id"] for r in a if b[r["review_id"]] != r["label"]]
    assert changed, "the neutral prompt changed no answer: the test shows nothing"
    ids = page.evaluate(
        "[...document.querySelectorAll('[data-table=changed] tbody tr')]"
        ".map(r => r.cells[0].textContent)"
    )
    assert ids == changed
    _offline(shown["requests"], out)
    assert root.exists()


def test_report_rebuilds_the_page_from_the_output_alone(runs, capsys) -> None:
    root = runs["root"]
    for name in CONFIGS:
        report = runs["reports"][name]
        html = Path(report["output"] + ".report.html")
        written = html.read_bytes()
        html.unlink()
        assert main(["report", report["output"]]) == 0
        assert html.read_bytes() == written
        html.unlink()
        assert main(["report", str(root / "configs" / f"{name}.yaml")]) == 0
        assert html.read_bytes() == written
    assert "report: " in capsys.readouterr().out
    assert main(["report", str(root / "data/output/missing.parquet")]) == 2
    assert "no such output table" in capsys.readouterr().err


def test_the_run_has_a_charts_artifact_with_the_main_chart(runs) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        artifact = client.read_latest_artifacts()
        charts = {a.key: a for a in artifact if a.key and a.key.endswith("-charts")}
    assert {f"{name}-charts" for name in CONFIGS} <= set(charts)
    for key, artifact in charts.items():
        data = artifact.data
        assert "](data:image/png;base64," in data, key
        png = base64.b64decode(data.split("base64,")[1].split(")")[0])
        assert png.startswith(b"\x89PNG") and len(png) > 5_000
    report = runs["reports"]["neutral"]  # the latest review-sentiment run
    description = charts["review-sentiment-charts"].description
    assert f"accuracy {100 * report['gold']['accuracy']:.1f}%" in description
    saved = orjson.loads(Path(report["output"] + ".report.json").read_bytes())
    assert saved["columns"]["id"] == "review_id"


TABLE_JS = """[...document.querySelectorAll('[data-table=%s] tbody tr')]
  .map(r => [...r.cells].map(c => c.textContent.trim()))"""


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def test_the_extraction_page_shows_each_fields_figures(runs, browser) -> None:
    report = runs["reports"]["ticket-extraction"]
    ex = report["extraction"]
    page = browser()
    page.goto(Path(report["output"] + ".report.html").as_uri())
    rows = {r[0]: r for r in page.evaluate(TABLE_JS % "fields")}
    assert list(rows) == list(ex["fields"])
    for name, stats in ex["fields"].items():
        _, filled, fill_rate, valid, shown, accuracy = rows[name]
        assert (filled, fill_rate) == (f"{stats['filled']:,}", _pct(stats["fill_rate"]))
        assert valid == "100.0%"  # every answer was valid (ex["invalid"] == 0)
        for value, n in (stats.get("values") or {}).items():
            assert f"{value}: {n:,}" in shown
        gold = (ex.get("gold") or {}).get(name)
        assert accuracy == (_pct(gold["accuracy"]) if gold else "")
    assert ex["invalid"] == 0
    # the value bars: one per value of the enum, as tall as its count (the tooltip's data)
    labels = page.evaluate(
        "[...document.querySelectorAll('[data-chart=\"values:severity\"] svg text')]"
        ".map(t => t.textContent)"
    )
    assert set(ex["fields"]["severity"]["values"]) <= set(labels)


def test_the_multi_label_page_shows_per_label_scores(runs, browser) -> None:
    report = runs["reports"]["ticket-tags"]
    multi = report["multi_label"]
    page = browser()
    page.goto(Path(report["output"] + ".report.html").as_uri())
    assert page.evaluate("document.querySelector('[data-chart=confusion]')") is None
    assert report["columns"]["inputs"] == ["text"]  # {labels} is the kind's, not a column
    rows = page.evaluate(TABLE_JS % "per_label")
    assert rows == [
        [label, _pct(m["precision"]), _pct(m["recall"]), _pct(m["f1"]), str(m["support"])]
        for label, m in multi["per_label"].items()
    ]
    texts = page.evaluate(
        "[...document.querySelectorAll('[data-chart=distribution] svg text')]"
        ".map(t => t.textContent)"
    )
    assert {"answers", "gold", *multi["per_label"]} <= set(texts)
    sample = page.evaluate(TABLE_JS % "sample")
    assert sample and all(len(r) == len(sample[0]) for r in sample)


def test_compare_of_two_multi_label_runs(runs, browser, tmp_path) -> None:
    first, second = runs["reports"]["ticket-tags"], runs["reports"]["tags-plain"]
    out = tmp_path / "compare-tags.html"
    assert main(["compare", first["output"], second["output"], "--out", str(out)]) == 0
    page = browser()
    shown = _open(page, out, tmp_path / "compare-tags.png")
    assert {"status", "deltas"} <= set(shown["charts"])
    assert all(w > 50 and h > 50 for w, h in shown["charts"].values())

    deltas = page.evaluate(TABLE_JS % "deltas")
    a, b = first["multi_label"]["per_label"], second["multi_label"]["per_label"]
    assert deltas == [
        [
            label,
            _pct(a[label]["f1"]),
            _pct(b[label]["f1"]),
            f"{100 * (f1 - a[label]['f1']):+.1f} pts",
        ]
        for label, f1 in ((label, b[label]["f1"]) for label in a)
    ]
    before = pq.read_table(first["output"], columns=["ticket_id", "labels"]).to_pylist()
    after = {r["ticket_id"]: r["labels"] for r in pq.read_table(second["output"]).to_pylist()}
    changed = [r for r in before if after[r["ticket_id"]] != r["labels"]]
    assert changed, "the plain prompt changed no tags: the test shows nothing"
    table = page.evaluate(TABLE_JS % "changed")
    assert [r[0] for r in table] == [r["ticket_id"] for r in changed]
    texts = {r["ticket_id"]: r["text"] for r in pq.read_table(first["output"]).to_pylist()}
    assert [r[1] for r in table] == [texts[r["ticket_id"]] for r in changed]  # the ticket
    assert [r[-2:] for r in table] == [
        [", ".join(r["labels"]) or "", ", ".join(after[r["ticket_id"]]) or ""] for r in changed
    ]
    _offline(shown["requests"], out)


def test_pages_without_gold_or_reference_say_what_is_not_scored(runs) -> None:
    from tablebatch.report.build import render
    from tablebatch.report.run import Run

    reports = runs["reports"]
    gen = orjson.loads(orjson.dumps(reports["faq-translation"]))
    del gen["scores"]
    gen["columns"]["reference"] = None
    page = render(Run.of(gen, gen["output"]))
    assert "No reference column" in page and 'data-chart="lengths"' in page
    assert 'data-chart="scores"' not in page
    ex = orjson.loads(orjson.dumps(reports["ticket-extraction"]))
    del ex["extraction"]["gold"]
    page = render(Run.of(ex, ex["output"]))
    assert "No gold_columns" in page and 'data-chart="fields"' in page
    assert 'data-chart="accuracy"' not in page
    tags = orjson.loads(orjson.dumps(reports["ticket-tags"]))
    tags["multi_label"] = {}  # as a multi-label run with no gold_column writes it
    page = render(Run.of(tags, tags["output"]))
    assert "No gold column" in page and 'data-chart="distribution"' in page
    assert 'data-figure="micro_f1"' not in page
