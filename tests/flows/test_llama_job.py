"""Jobs through the real flow with a real model: ``api: {base_url: local, backend: llama}``.

The run's own local server answers with SmolLM2-135M-Instruct (the [llama] extra). The
rows are few and the answers short; every run of the module shares one pool of model
processes (the pool belongs to the test process, not to a server).
"""

from __future__ import annotations

import csv
import io
import re
import sqlite3
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from flows.cli import main
from flows.job import batch_job
from tablebatch.jobs.scoring import normalize_label
from tests.flows.test_manage import Run, _answered, _until

# a real model on 2 busy cores: a module's first test also loads the model and Prefect
pytestmark = [pytest.mark.llama, pytest.mark.timeout(300)]

REVIEWS = [
    ("r1", "Great sound and the battery lasts for days. I love them.", "positive"),
    ("r2", "The left ear cup broke after two weeks. Total waste of money.", "negative"),
    ("r3", "Makes smoothies in seconds and it is easy to clean. Highly recommended.", "positive"),
    ("r4", "Stopped working after a month. Customer service was rude.", "negative"),
    ("r5", "too long " + "blah " * 3000, "negative"),  # over the model's context window
]


def _csv(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _requests(root: Path) -> int:
    with sqlite3.connect(root / ".tablebatch" / "server.db") as db:
        return db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]


def test_a_classification_job_with_a_real_model(project, monkeypatch, capsys) -> None:
    config = project(
        {
            "name": "llama-sentiment",
            "kind": "classification",
            "input": {"path": "data/reviews.csv", "id_column": "review_id"},
            "prompt": {
                "system": "You label the sentiment of product reviews.",
                "template": "Is this review positive or negative?\n\n{text}",
            },
            "model": "grok-4",
            "params": {"temperature": 0, "max_tokens": 8},
            "labels": ["positive", "negative"],
            "gold_column": "sentiment",
            "api": {"base_url": "local", "backend": "llama"},
            "batch": {"max_attempts": 1},
            "output": {"path": "data/output/sentiment.parquet"},
        },
        {"data/reviews.csv": _csv(REVIEWS, ("review_id", "text", "sentiment"))},
    )
    root = config.parent.parent
    report = batch_job(str(config))
    rows = pq.read_table(root / "data/output/sentiment.parquet").to_pylist()
    assert [r["status"] for r in rows] == ["completed"] * 4 + ["failed"]
    # the model answers in sentences ("This review is negative. The customer …"), not labels
    assert any(r["answer"].strip().lower() not in ("positive", "negative") for r in rows[:4])
    for row in rows[:4]:  # labels normalised from the model's own free text
        assert row["answer"].strip()
        assert row["label"] == (
            normalize_label(row["answer"], ["positive", "negative"]) or "INVALID"
        )
        assert row["prompt_tokens"] > 20 and 0 < row["completion_tokens"] <= 8
    too_long = rows[4]
    assert too_long["label"] is None or too_long["label"] == "INVALID"
    assert "context window is 2048 tokens" in too_long["error"]
    assert report["rows_by_status"] == {"completed": 4, "failed": 1}
    assert report["gold"]["gold_column"] == "sentiment"
    sent = _requests(root)

    # a re-run finds its batch and sends nothing; the answers are the same
    monkeypatch.chdir(root)
    assert main(["run", str(config)]) == 0
    out = capsys.readouterr().out
    assert "llama-sentiment: 5 rows (4 completed, 1 failed)" in out
    assert _requests(root) == sent
    again = pq.read_table(root / "data/output/sentiment.parquet").to_pylist()
    assert [r["answer"] for r in again] == [r["answer"] for r in rows]


FIELDS = {  # output_schema inline, as in configs/ticket-extraction.yaml
    "product": {"type": "string", "description": "the product the review is about"},
    "sentiment": {"type": "enum", "values": ["positive", "negative"]},
    "stars": {"type": "integer", "description": "the stars given, 1 to 5"},
    "recommended": {"type": "boolean", "description": "does the reviewer recommend it"},
}
NOTES = [
    ("e1", "The Aeropress coffee maker is great. Five stars, I recommend it.", "positive"),
    ("e2", "This Acme toaster burnt my bread. One star. Avoid it.", "negative"),
    ("e3", "A decent Hario kettle, three stars from me.", "positive"),
]


def test_an_extraction_job_gets_schema_valid_typed_columns(project, monkeypatch, capsys) -> None:
    config = project(
        {
            "name": "llama-extract",
            "kind": "extraction",
            "input": {"path": "data/notes.csv", "id_column": "id"},
            "prompt": {
                "system": "You extract fields from product reviews. Answer with JSON only.",
                "template": "Extract these fields from the review:\n{schema}\n\n{text}",
            },
            "model": "smollm2",
            "params": {"temperature": 0, "max_tokens": 96},
            "output_schema": FIELDS,
            "gold_columns": {"sentiment": "gold_sentiment"},
            "output": {"path": "data/output/extract.parquet"},
        },
        {"data/notes.csv": _csv(NOTES, ("id", "text", "gold_sentiment"))},
    )
    # no api in the config: `--backend llama` on the command line picks the model
    monkeypatch.setenv("TABLEBATCH_SERVER_BACKEND", "offline")  # restored after the test
    assert main(["run", str(config), "--backend", "llama"]) == 0
    out = capsys.readouterr().out
    assert "llama-extract: 3 rows (3 completed)" in out
    assert "valid answers 100.0% (0 invalid); filled: " in out
    assert re.search(r"sentiment: accuracy \d+\.\d% against gold_sentiment", out)
    output = pq.read_table(config.parent.parent / "data/output/extract.parquet")
    types = {name: str(output.schema.field(name).type) for name in FIELDS}
    assert types == {
        "product": "string",
        "sentiment": "string",
        "stars": "int64",
        "recommended": "bool",
    }
    for row in output.to_pylist():  # the model's own answers, parsed into typed values
        assert row["status"] == "completed" and row["parse_error"] is None
        assert isinstance(row["product"], str) and row["product"].strip()
        assert row["sentiment"] in ("positive", "negative")
        assert isinstance(row["stars"], int) and not isinstance(row["stars"], bool)
        assert isinstance(row["recommended"], bool)
        assert orjson.loads(row["answer"]) == {f: row[f] for f in FIELDS}
        assert row["completion_tokens"] <= 96


def test_cancelling_a_llama_job_mid_batch(project, monkeypatch, capsys) -> None:
    rows = [(f"s{i:02}", f"Story number {i} about a lighthouse keeper.") for i in range(24)]
    config = project(
        {
            "name": "llama-stories",
            "kind": "summarization",
            "input": {"path": "data/stories.csv", "id_column": "id"},
            "prompt": {"template": "Write a long story from this title: {text}"},
            "model": "smollm2",
            "params": {"temperature": 0.7, "seed": 3, "max_tokens": 48},
            "api": {"backend": "llama"},  # implies base_url: local
            "output": {"path": "data/output/stories.parquet"},
        },
        {"data/stories.csv": _csv(rows, ("id", "text"))},
    )
    root = config.parent.parent
    monkeypatch.chdir(root)
    run = Run(config)
    _until(_answered(root, 1), timeout=300, what="a first answer")
    assert main(["cancel", "llama-stories", "--yes"]) == 0
    report = run.join()
    assert run.error is None, run.error
    by_status = report["rows_by_status"]
    assert set(by_status) == {"completed", "cancelled"}
    assert by_status["cancelled"] > 0 and sum(by_status.values()) == 24
    capsys.readouterr()
