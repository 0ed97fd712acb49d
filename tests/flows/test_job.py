"""The job flow end to end: real Prefect engine, real local server, real files."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from flows.job import batch_job

TRICKY = [
    ("a1", 'She said "great product, love it" — and meant it.', "positive"),
    ("a2", "Broke after a day.\nTerrible, returned it; waste of money.", "negative"),
    ("a3", "Ünïcödé and emoji 🎉: excellent, works perfectly", "positive"),
    ("a4", "Comma, comma, comma, — it is awful, useless and cheap", "negative"),
    ("a5", "Not good at all. Disappointed.", "negative"),
    ("a6", "'Single quotes' and {braces} and a tab\there: I love it", "positive"),
]


def _csv(rows: list[tuple], header: tuple[str, ...]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _classification(**extra: object) -> dict:
    return {
        "name": "sentiment",
        "kind": "classification",
        "input": {"path": "data/reviews.csv", "id_column": "review_id"},
        "prompt": {"template": "Is this review positive or negative?\n\n{text}"},
        "model": "grok-4",
        "params": {"temperature": 0, "max_tokens": 8},
        "labels": ["positive", "negative"],
        "gold_column": "gold",
        "output": {"path": "data/output/sentiment.parquet"},
        **extra,
    }


def _requests_on_server(root: Path) -> int:
    with sqlite3.connect(root / ".tablebatch" / "server.db") as db:
        return db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]


def test_classification_joins_every_row_in_order(project) -> None:
    rows = TRICKY[::-1]  # ids out of order: output keeps input order, not id order
    config = project(
        _classification(), {"data/reviews.csv": _csv(rows, ("review_id", "text", "gold"))}
    )
    report = batch_job(str(config))
    root = config.parent.parent
    output = pq.read_table(root / "data/output/sentiment.parquet")
    assert output.column("review_id").to_pylist() == [r[0] for r in rows]
    assert output.column("text").to_pylist() == [r[1] for r in rows]  # text survives as is
    assert output.column("gold").to_pylist() == [r[2] for r in rows]
    assert set(output.column("status").to_pylist()) == {"completed"}
    assert output.column("label").to_pylist() == [r[2] for r in rows]
    assert output.column("answer").to_pylist() == [r[2] for r in rows]
    assert set(output.column("attempts").to_pylist()) == {1}
    assert all(t > 0 for t in output.column("prompt_tokens").to_pylist())
    assert len(set(output.column("batch_id").to_pylist())) == 1
    assert output.column_names[:3] == ["review_id", "text", "gold"]
    gold = report["gold"]
    assert gold["accuracy"] == 1.0 and gold["macro_f1"] == 1.0
    assert gold["confusion_matrix"]["rows"]["negative"] == {
        "positive": 0,
        "negative": 3,
        "INVALID": 0,
    }
    saved = json.loads((root / "data/output/sentiment.parquet.report.json").read_text())
    assert saved["rows_by_status"] == {"completed": 6}
    assert saved["tokens"] == report["tokens"]
    assert not (root / ".tablebatch" / "spool").exists()  # answers were spooled, then removed


def test_the_same_config_twice_sends_nothing_new(project) -> None:
    config = project(
        _classification(), {"data/reviews.csv": _csv(TRICKY, ("review_id", "text", "gold"))}
    )
    first = batch_job(str(config))
    root = config.parent.parent
    assert _requests_on_server(root) == 6
    second = batch_job(str(config))
    assert _requests_on_server(root) == 6
    assert [b["id"] for b in second["batches"]] == [b["id"] for b in first["batches"]]
    assert second["rows_by_status"] == first["rows_by_status"]


def test_failed_rows_are_retried_in_follow_up_batches(project, monkeypatch) -> None:
    monkeypatch.setenv("TABLEBATCH_SERVER_FAULTS__REQUEST_FAILURE_RATE", "0.5")
    monkeypatch.setenv("TABLEBATCH_SERVER_FAULTS__SEED", "4")
    rows = [(f"r{i}", f"Review {i}: great, I love it", "positive") for i in range(40)]
    config = project(
        _classification(batch={"max_attempts": 3, "max_requests": 15, "error_budget": 0.9}),
        {"data/reviews.csv": _csv(rows, ("review_id", "text", "gold"))},
    )
    report = batch_job(str(config))
    output = pq.read_table(config.parent.parent / "data/output/sentiment.parquet")
    status = output.column("status").to_pylist()
    attempts = output.column("attempts").to_pylist()
    assert output.column("review_id").to_pylist() == [r[0] for r in rows]
    assert {1, 2, 3} <= set(attempts)  # some rows needed a second and a third try
    assert report["attempts"] == {str(k): attempts.count(k) for k in sorted(set(attempts))}
    assert [b["attempt"] for b in report["batches"]][:3] == [1, 1, 1]  # 40 rows, 15 a batch
    failed = [i for i, s in enumerate(status) if s == "failed"]
    for i in failed:  # kept, with the server's error text, after the last attempt
        assert attempts[i] == 3
        assert "injected fault" in output.column("error")[i].as_py()
        assert output.column("answer")[i].as_py() is None
    completed = [i for i, s in enumerate(status) if s == "completed"]
    assert len(completed) > 30
    assert all(output.column("label")[i].as_py() == "positive" for i in completed)


def test_summarization_with_rouge(project) -> None:
    rows = [
        (
            "d1",
            "The council approved new cycle lanes. Work starts in spring.",
            "The council approved cycle lanes.",
        ),
        (
            "d2",
            "A bakery won a national prize. Queues formed on Saturday.",
            "A bakery won a prize.",
        ),
        ("d3", "", "Nothing."),
    ]
    config = project(
        {
            "name": "sums",
            "kind": "summarization",
            "input": {"path": "data/docs.csv", "id_column": "doc"},
            "prompt": {"template": "Summarize in one sentence.\n\n{body}"},
            "model": "grok-4",
            "reference_column": "ref",
            "output": {"path": "out/sums.csv"},
        },
        {"data/docs.csv": _csv(rows, ("doc", "body", "ref"))},
    )
    report = batch_job(str(config))
    output = pacsv.read_csv(config.parent.parent / "out/sums.csv")
    assert output.column("summary").to_pylist()[:2] == [
        "The council approved new cycle lanes.",
        "A bakery won a national prize.",
    ]
    assert output.column("status").to_pylist() == ["completed", "completed", "skipped"]
    assert "prompt is empty" in output.column("error")[2].as_py()
    rouge1 = output.column("rouge1").to_pylist()
    # 5 of the 6 summary words are in the 5-word reference: P = 5/6, R = 1
    assert rouge1[0] == pytest.approx(2 * (5 / 6) * 1 / (5 / 6 + 1))
    assert rouge1[2] is None
    assert report["summary_lengths"]["count"] == 2
    assert report["rows_by_status"] == {"completed": 2, "skipped": 1}


def test_evaluation_two_models_and_a_judge(project) -> None:
    rows = [
        ("q1", "Is the sky blue or green?", "blue"),
        ("q2", "Is fire hot or cold?", "hot"),
        ("q3", "Is ice cold or hot?", "cold"),
    ]
    config = project(
        {
            "name": "quiz",
            "kind": "evaluation",
            "input": {"path": "data/quiz.csv", "id_column": "id"},
            "prompt": {"template": "{question}"},
            "models": ["model-a", "model-b"],
            "reference_column": "answer",
            "scoring": "judge",
            "judge": {"model": "judge-1"},
            "output": {"path": "out/quiz.parquet"},
        },
        {"data/quiz.csv": _csv(rows, ("id", "question", "answer"))},
    )
    report = batch_job(str(config))
    output = pq.read_table(config.parent.parent / "out/quiz.parquet")
    assert output.num_rows == 6
    assert output.column("id").to_pylist() == ["q1", "q1", "q2", "q2", "q3", "q3"]
    assert output.column("model").to_pylist() == ["model-a", "model-b"] * 3
    verdicts = output.column("judge_answer").to_pylist()
    assert set(verdicts) <= {"correct", "incorrect"}
    assert output.column("score").to_pylist() == [1.0 if v == "correct" else 0.0 for v in verdicts]
    assert set(report["per_model"]) == {"model-a", "model-b"}
    stages = [(b["stage"], b["model"]) for b in report["batches"]]
    assert stages.count(("judge", "judge-1")) == 2
    for model in ("model-a", "model-b"):
        scores = [
            s
            for m, s in zip(
                output.column("model").to_pylist(), output.column("score").to_pylist(), strict=True
            )
            if m == model
        ]
        assert report["per_model"][model]["mean_score"] == pytest.approx(sum(scores) / 3)


def test_evaluation_scored_against_references(project) -> None:
    rows = [("q1", "Is the sky blue or green?", "Blue."), ("q2", "Is fire hot or cold?", "warm")]
    config = project(
        {
            "name": "quiz2",
            "kind": "evaluation",
            "input": {"path": "data/quiz.parquet", "id_column": "id"},
            "prompt": {"template": "{question}"},
            "model": "m",
            "reference_column": "answer",
            "scoring": "normalized",
        },
        {},
    )
    import pyarrow as pa

    root = config.parent.parent
    (root / "data").mkdir(exist_ok=True)
    pq.write_table(
        pa.table({k: [r[i] for r in rows] for i, k in enumerate(("id", "question", "answer"))}),
        root / "data/quiz.parquet",
    )
    batch_job(str(config))
    output = pq.read_table(root / "data/output/quiz2.parquet")
    answers = output.column("answer").to_pylist()
    expected = [float(a.lower() == "blue") for a in answers[:1]] + [0.0]
    assert output.column("score").to_pylist() == expected


def test_the_report_and_progress_are_prefect_artifacts(project) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    config = project(
        _classification(), {"data/reviews.csv": _csv(TRICKY, ("review_id", "text", "gold"))}
    )
    state = batch_job(str(config), return_state=True)
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    by_type: dict[str, list] = {}
    for artifact in artifacts:
        by_type.setdefault(artifact.type, []).append(artifact)
    markdowns = {a.key: a for a in by_type["markdown"]}
    assert set(markdowns) == {"sentiment-report", "sentiment-charts"}  # charts: issue 18
    markdown = markdowns["sentiment-report"]
    assert "Accuracy 100.0%" in markdown.data and "| gold \\ answer |" in markdown.data
    (table,) = by_type["table"]
    assert "positive" in str(table.data)
    (progress,) = by_type["progress"]
    assert progress.data == 100.0


def test_the_api_key_comes_from_a_prefect_secret_block(project, server_factory) -> None:
    from prefect.blocks.system import Secret

    from tablebatch.api import AuthenticationError

    server = server_factory(api_keys=["sk-from-block"])
    Secret(value="sk-from-block").save("tablebatch-test-key", overwrite=True)
    config = project(
        _classification(api={"base_url": server.url, "api_key_secret": "tablebatch-test-key"}),
        {"data/reviews.csv": _csv(TRICKY, ("review_id", "text", "gold"))},
    )
    report = batch_job(str(config))
    assert report["rows_by_status"] == {"completed": 6}
    assert "sk-from-block" not in json.dumps(report)
    Secret(value="sk-stale").save("tablebatch-test-key", overwrite=True)
    with pytest.raises(AuthenticationError) as info:
        batch_job(str(config), settings=["name=sentiment-2"])
    assert "Prefect Secret block 'tablebatch-test-key'" in str(info.value)
    assert "sk-stale" not in str(info.value)


def test_run_parameters_cannot_leave_the_project_or_change_the_api(project, tmp_path) -> None:
    from flows.job import JobOverrides
    from tablebatch.jobs.errors import ConfigError

    config = project(
        _classification(), {"data/reviews.csv": _csv(TRICKY, ("review_id", "text", "gold"))}
    )
    for overrides, settings, words in [
        (JobOverrides(output_path="../outside.parquet"), None, "leaves the project folder"),
        (JobOverrides(output_path="/tmp/elsewhere.parquet"), None, "leaves the project folder"),
        (None, ["output.path=s3://bucket/x.parquet"], "leaves the project folder"),
        (JobOverrides(input_path="/etc/passwd.csv"), None, "leaves the project folder"),
        (None, ["api.base_url=http://example.invalid/v1"], "cannot be changed by a run's"),
    ]:
        with pytest.raises(ConfigError, match=words):
            batch_job(str(config), overrides=overrides, settings=settings)
    inside = JobOverrides(output_path="data/output/elsewhere.csv")
    batch_job(str(config), overrides=inside)
    assert (tmp_path / "data/output/elsewhere.csv").exists()
    assert not (tmp_path.parent / "outside.parquet").exists()
