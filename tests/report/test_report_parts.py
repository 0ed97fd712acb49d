"""The report's parts without Prefect: reading output tables a few columns and rows at a time,
the confidence intervals, the kind registry, and the pages of hand-made outputs."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tablebatch.report.build import artifact, render, write_html
from tablebatch.report.compare import render_compare
from tablebatch.report.kinds import KINDS, kind_report
from tablebatch.report.kinds.evaluation import interval
from tablebatch.report.run import Run
from tablebatch.report.table import OutputTable, ReportInputError, sample_indices


def _rows(n: int) -> pa.Table:
    status = ["failed" if i % 7 == 3 else "completed" for i in range(n)]
    return pa.table(
        {
            "review_id": [f"r{i:05d}" for i in range(n)],
            "text": [f"review number {i}" for i in range(n)],
            "answer": [
                None if s == "failed" else ("positive" if i % 2 else "meh")
                for i, s in enumerate(status)
            ],
            "status": status,
            "error": ["server error: boom" if s == "failed" else None for s in status],
            "attempts": pa.array([3 if s == "failed" else 1 for s in status], pa.int32()),
            "prompt_tokens": pa.array([10] * n, pa.int64()),
            "completion_tokens": pa.array([0 if s == "failed" else 2 for s in status], pa.int64()),
            "label": [
                None if s == "failed" else ("positive" if i % 2 else "INVALID")
                for i, s in enumerate(status)
            ],
        }
    )


def _report(table: pa.Table, output: Path) -> dict:
    status = pc.value_counts(table["status"]).to_pylist()
    labels = pc.value_counts(table["label"].drop_null()).to_pylist()
    return {
        "job": "hand-made",
        "kind": "classification",
        "models": ["m"],
        "output": str(output),
        "input_rows": table.num_rows,
        "output_rows": table.num_rows,
        "rows_by_status": {c["values"]: c["counts"] for c in status},
        "tokens": {"prompt": 10 * table.num_rows, "completion": 0},
        "attempts": {"1": 1},
        "batches": [{"requests": table.num_rows}],
        "labels": {c["values"]: c["counts"] for c in labels},
        "columns": {
            "id": "review_id",
            "inputs": ["text"],
            "gold": None,
            "reference": None,
            "invalid_label": "INVALID",
        },
    }


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_an_output_is_read_a_few_columns_and_rows_at_a_time(tmp_path, suffix) -> None:
    table = _rows(1000)
    path = tmp_path / f"out{suffix}"
    if suffix == ".parquet":
        pq.write_table(table, path, row_group_size=128)
    else:
        pacsv.write_csv(table, path)
    out = OutputTable.open(path)
    assert out.num_rows == 1000 and out.names == table.column_names
    picked = [999, 0, 500, 129, 128, 127]
    taken = out.take(picked, ["review_id", "attempts"])
    assert taken.column_names == ["review_id", "attempts"]
    assert taken["review_id"].to_pylist() == [f"r{i:05d}" for i in sorted(picked)]
    assert taken.schema.field("attempts").type == pa.int32()  # CSV numbers read as the schema's
    failed = out.first_where(
        lambda b: pc.equal(b["status"], "failed"), ["status"], ["review_id", "error"], 5
    )
    assert failed["review_id"].to_pylist() == ["r00003", "r00010", "r00017", "r00024", "r00031"]
    assert set(failed["error"].to_pylist()) == {"server error: boom"}
    positions, total = out.positions(lambda b: pc.equal(b["status"], "failed"), ["status"], 2)
    assert positions == [3, 10] and total == sum(1 for i in range(1000) if i % 7 == 3)
    assert out.read(["prompt_tokens"]).num_rows == 1000
    rows, how = out.sample(20, ["review_id", "text"], seed=1)
    ids = [int(i[1:]) for i in rows["review_id"].to_pylist()]
    assert len(set(ids)) == 20 and rows["text"].to_pylist() == [f"review number {i}" for i in ids]
    if suffix == ".parquet":  # 8 row groups of 128 rows: only 3 are read
        assert len({i // 128 for i in ids}) <= 3 and "from 3 of its 8 row groups" in how
    else:
        assert how == "20 of 1,000 rows, drawn at random"


def test_a_sample_is_the_same_every_time_and_spread() -> None:
    first = sample_indices(1_000_000, 2000, seed=3)
    assert first == sample_indices(1_000_000, 2000, seed=3)
    assert len(set(first)) == 2000 and first == sorted(first)
    assert first[0] < 10_000 and first[-1] > 990_000
    assert sample_indices(5, 10) == [0, 1, 2, 3, 4]


def test_confidence_intervals() -> None:
    # Wilson's interval for 5 of 10, worked by hand: centre 0.5, half-width 0.2634
    mean, lo, hi = interval(np.array([1.0] * 5 + [0.0] * 5))
    assert (mean, round(lo, 4), round(hi, 4)) == (0.5, 0.2366, 0.7634)
    mean, lo, hi = interval(np.ones(12))  # all passed: the interval still has a width
    assert mean == 1.0 and hi == 1.0 and round(lo, 4) == 0.7575
    mean, lo, hi = interval(np.array([0.2, 0.4, 0.6]))  # not 0/1: t-free normal interval
    half = 1.959964 * 0.2 / math.sqrt(3)
    assert math.isclose(lo, 0.4 - half) and math.isclose(hi, 0.4 + half)
    assert all(math.isnan(x) for x in interval(np.array([])))


def test_every_kind_has_a_module_and_an_unknown_kind_gets_the_common_parts(tmp_path) -> None:
    kind_report("classification")
    kinds = {"classification", "summarization", "evaluation", "extraction", "generation"}
    assert kinds <= set(KINDS)
    table = _rows(40)
    path = tmp_path / "out.parquet"
    pq.write_table(table, path)
    report = {**_report(table, path), "kind": "no-such-kind"}
    page = render(Run.of(report, path))
    assert 'data-section="overview"' in page and 'data-section="sample"' in page
    assert 'data-section="classification"' not in page


def test_a_page_lists_the_failed_rows_and_the_invalid_answers(tmp_path) -> None:
    table = _rows(2000)
    path = tmp_path / "out.parquet"
    pq.write_table(table, path, row_group_size=300)
    report = _report(table, path)
    html = write_html(report, path).read_text()
    failed = re.search(r'<table data-table="failed">(.*?)</table>', html, re.S).group(1)
    assert failed.count("<tr>") == 51  # the header and the first 50
    assert "r00003" in failed and "server error: boom" in failed
    assert f"{report['rows_by_status']['failed']:,} row(s) did not complete" in html
    invalid = re.search(r'<table data-table="invalid">(.*?)</table>', html, re.S).group(1)
    assert invalid.count("<tr>") == 51 and "r00000" in invalid and "r00001" not in invalid
    assert "12 of 2,000 rows, drawn at random from 3 of its 7 row groups (drawn at random)." in html
    markdown, description = artifact(Run.of(report, path), None)
    assert "](data:image/png;base64," in markdown and "positive" in description


def test_compare_refuses_what_it_cannot_compare(tmp_path) -> None:
    table = _rows(10)
    path = tmp_path / "out.parquet"
    pq.write_table(table, path)
    report = _report(table, path)
    run = Run.of(report, path)
    with pytest.raises(ReportInputError, match="two runs or more"):
        render_compare([run])
    other = Run.of({**report, "kind": "summarization"}, path)
    with pytest.raises(ReportInputError, match="compare runs of one kind"):
        render_compare([run, other])
    page = render_compare([Run.of(report, path), Run.of(report, path)])
    assert "0 of 10 matched rows" in page  # a run against itself: nothing changed
    with pytest.raises(ReportInputError, match="no report JSON"):
        Run.load(path)
    Path(str(path) + ".report.json").write_bytes(orjson.dumps(report))
    assert Run.load(path).report == report
    Path(str(path) + ".report.json").write_text('{"job": "x"}')
    with pytest.raises(
        ReportInputError, match=r"not a tablebatch report \(no kind, rows_by_status"
    ):
        Run.load(path)
    Path(str(path) + ".report.json").write_text("{nope")
    with pytest.raises(ReportInputError, match="not valid JSON"):
        Run.load(path)
    Path(str(path) + ".report.json").write_bytes(orjson.dumps(report))
    path.write_bytes(b"not parquet at all")
    with pytest.raises(ReportInputError, match="not a readable Parquet file"):
        Run.load(path)


def _evaluation(path: Path, answers: list[str], scores: list[float]) -> dict:
    """A hand-made evaluation output: 4 questions, 2 models, in the output's row order."""
    n = len(answers)
    table = pa.table(
        {
            "question_id": [f"q{i // 2}" for i in range(n)],
            "question": [f"question {i // 2}?" for i in range(n)],
            "answer_input": ["right"] * n,
            "answer": answers,
            "status": ["completed"] * n,
            "error": pa.nulls(n, pa.string()),
            "attempts": pa.array([1] * n, pa.int32()),
            "prompt_tokens": pa.array([5] * n, pa.int64()),
            "completion_tokens": pa.array([1] * n, pa.int64()),
            "model": ["a", "b"] * (n // 2),
            "score": scores,
        }
    )
    pacsv.write_csv(table, path)
    per_model = {
        m: {
            "scored": n // 2,
            "unscored": 0,
            "mean_score": float(np.mean(scores[k::2])),
            "pass_rate": float(np.mean(scores[k::2])),
        }
        for k, m in enumerate(("a", "b"))
    }
    return {
        "job": "quiz",
        "kind": "evaluation",
        "models": ["a", "b"],
        "output": str(path),
        "input_rows": n // 2,
        "output_rows": n,
        "rows_by_status": {"completed": n},
        "tokens": {"prompt": 5 * n, "completion": n},
        "attempts": {"1": n},
        "batches": [],
        "scoring": "exact",
        "per_model": per_model,
        "columns": {
            "id": "question_id",
            "inputs": ["question"],
            "gold": None,
            "reference": "answer_input",
        },
    }


def test_evaluation_pages_match_rows_by_id_and_model(tmp_path) -> None:
    first = _evaluation(
        tmp_path / "one.csv",
        ["right", "x", "x", "x", "right", "right", "y", "y"],
        [1, 0, 0, 0, 1, 1, 0, 0],
    )
    second = _evaluation(
        tmp_path / "two.csv",
        ["right", "x", "x", "right", "right", "right", "y", "y"],
        [1, 0, 0, 1, 1, 1, 0, 0],
    )
    page = render(Run.of(first, tmp_path / "one.csv"))
    failed = re.search(r'<table data-table="all_failed">(.*?)</table>', page, re.S).group(1)
    assert failed.count("<tr>") == 3  # the header, q1 and q3: no model passed them
    assert "q1" in failed and "q3" in failed and "q0" not in failed
    assert "2 item(s) no model passed" in page
    compare = render_compare(
        [Run.of(first, tmp_path / "one.csv"), Run.of(second, tmp_path / "two.csv")]
    )
    changed = re.search(r'<table data-table="changed">(.*?)</table>', compare, re.S).group(1)
    assert (
        changed.count("<tr>") == 2
        and '<td><div class="cell">q1</div></td><td><div class="cell">b</div></td>' in changed
    )
    assert "1 of 8 matched rows" in compare
    deltas = re.search(r'<table data-table="deltas">(.*?)</table>', compare, re.S).group(1)
    assert "+0.250" in deltas  # model b: 0.25 -> 0.50 (q1 passed now)


def test_an_old_report_json_without_columns_still_builds(tmp_path) -> None:
    table = _rows(30)
    path = tmp_path / "out.parquet"
    pq.write_table(table, path)
    report = _report(table, path)
    del report["columns"]
    page = render(Run.of(report, path))
    sample = re.search(r'<table data-table="sample">(.*?)</table>', page, re.S).group(1)
    assert "<th>review_id</th>" in sample and "<th>text</th>" in sample


def test_extraction_validity_per_field_counts_the_fields_the_parse_errors_name(tmp_path) -> None:
    status = ["completed"] * 6 + ["invalid"] * 4
    errors = [None] * 6 + [
        "severity: 'urgent' is not one of ['low', 'high']",
        "severity: 'x' is not one of ['low', 'high']; amount: 'lots' is not of type 'number'",
        "not valid JSON: unexpected character",
        "no answer",
    ]
    table = pa.table(
        {
            "ticket_id": [f"t{i}" for i in range(10)],
            "text": ["a ticket"] * 10,
            "answer": ["{}"] * 10,
            "status": status,
            "error": [None] * 10,
            "severity": ["low", "high", "low", "low", None, "high"] + [None] * 4,
            "amount": pa.array([1.5, None, None, None, None, 3.0] + [None] * 4, pa.float64()),
            "parse_error": errors,
        }
    )
    path = tmp_path / "ex.parquet"
    pq.write_table(table, path)
    report = {
        **_report(table.append_column("label", pa.array([None] * 10, pa.string())), path),
        "kind": "extraction",
        "extraction": {
            "answered": 6,
            "invalid": 4,
            "validity_rate": 0.6,
            "fields": {
                "severity": {"filled": 5, "fill_rate": 5 / 6, "values": {"low": 3, "high": 2}},
                "amount": {
                    "filled": 2,
                    "fill_rate": 2 / 6,
                    "range": {"min": 1.5, "max": 3.0, "mean": 2.25},
                },
            },
            "gold": {"severity": {"gold_column": "gold_severity", "scored": 5, "accuracy": 0.8}},
        },
    }
    report["columns"] = {"id": "ticket_id", "inputs": ["text"], "gold": None, "reference": None}
    run = Run.of(report, path)
    from tablebatch.report.kinds.extraction import field_validity

    # severity: broken by 2 named errors and the 2 that name no field (of 10 answers)
    assert field_validity(run) == {"severity": 0.6, "amount": 0.7}
    html = render(run)
    fields = re.search(r'<table data-table="fields">(.*?)</table>', html, re.S).group(1)
    cells = re.findall(r"<td[^>]*>(?:<div class=\"cell\">)?(.*?)(?:</div>)?</td>", fields)
    assert cells[:6] == ["severity", "5", "83.3%", "60.0%", "low: 3, high: 2", "80.0%"]
    assert cells[6:11] == ["amount", "2", "33.3%", "70.0%", "1.50 to 3.00, mean 2.25"]
    for key in ("fields", "accuracy", "values:severity"):
        assert f'data-chart="{key}"' in html
    assert 'data-figure="accuracy:severity"' in html


def test_the_header_shows_the_cost_when_the_report_has_it(tmp_path) -> None:
    from tablebatch.report.common import cost_figures

    assert [(f.key, f.value) for f in cost_figures({})] == [("cost", "unknown")]
    assert [(f.key, f.value) for f in cost_figures({"cost": None})] == [("cost", "unknown")]
    unpriced = {"cost": {"this_run": None, "behind_output": None, "unknown": ["my-model"]}}
    assert [(f.key, f.label, f.value) for f in cost_figures(unpriced)] == [
        ("cost", "cost (no price for my-model)", "unknown")
    ]
    shown = cost_figures(
        {"cost": {"this_run": 12.5, "this_run_realtime": 25.0, "per_output_row": 0.0000125}}
    )
    assert [(f.key, f.value) for f in shown] == [
        ("cost", "$12.50"),
        ("cost_realtime", "$25.00"),
        ("cost_per_row", "$0.000013"),
    ]
    euros = cost_figures({"cost": {"this_run": 0.0421, "currency": "EUR"}})
    assert [(f.key, f.value) for f in euros] == [("cost", "EUR 0.0421")]
    table = _rows(10)
    path = tmp_path / "out.parquet"
    pq.write_table(table, path)
    report = {**_report(table, path), "cost": {"this_run": 0.42, "this_run_realtime": 0.84}}
    html = render(Run.of(report, path))
    assert '<div class="figure" data-figure="cost"><span class="value">$0.4200</span>' in html
