"""A job under every fault the server can inject gives the clean run's output (but for
attempts and batch ids); past the error budget it stops and says the failure is systemic."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from flows.job import batch_job
from tablebatch.jobs.errors import JobFailed

ROWS = 300
FAULTS = {
    "SEED": "7",
    "RATE_LIMIT_RATE": "0.1",
    "RETRY_AFTER_S": "0",
    "SERVER_ERROR_RATE": "0.05",
    "UNAVAILABLE_RATE": "0.05",
    "POST_COMMIT_ERROR_RATE": "0.05",
    "DISCONNECT_RATE": "0.05",
    "LATENCY_S": "0.002",
    "REQUEST_FAILURE_RATE": "0.2",
}


def _job(project, name: str, **extra: object):
    words = ["great", "terrible", "fine", "broken", "lovely"]
    lines = ["id,text"] + [
        f"r{i},Review {i}: {words[i % 5]} and really {words[i * 3 % 5]}" for i in range(ROWS)
    ]
    return project(
        {
            "name": name,
            "kind": "classification",
            "input": {"path": "data/reviews.csv", "id_column": "id"},
            "prompt": {"template": "Is this review positive or negative?\n\n{text}"},
            "model": "grok-4",
            "labels": ["positive", "negative"],
            "batch": {"max_requests": 70, "max_attempts": 8},
            "output": {"path": f"data/output/{name}.parquet"},
            **extra,
        },
        {"data/reviews.csv": "\n".join(lines) + "\n"},
    )


def test_faults_change_nothing_but_attempts(project, tmp_path, monkeypatch) -> None:
    clean_config = _job(project, "clean")
    batch_job(str(clean_config))
    clean = pq.read_table(tmp_path / "data/output/clean.parquet")

    for key, value in FAULTS.items():
        monkeypatch.setenv(f"TABLEBATCH_SERVER_FAULTS__{key}", value)
    faulty_config = _job(project, "faulty")
    report = batch_job(str(faulty_config))
    faulty = pq.read_table(tmp_path / "data/output/faulty.parquet")

    assert report["rows_by_status"] == {"completed": ROWS}
    assert max(faulty.column("attempts").to_pylist()) > 1  # the faults were real
    same = [c for c in clean.column_names if c not in ("attempts", "batch_id")]
    assert faulty.select(same).equals(clean.select(same))


def test_a_systemic_failure_stops_the_job(project, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TABLEBATCH_SERVER_FAULTS__REQUEST_FAILURE_RATE", "1")
    config = _job(project, "all-fail", batch={"max_attempts": 5})
    with pytest.raises(JobFailed) as info:
        batch_job(str(config))
    message = str(info.value)
    assert f"{ROWS} of {ROWS} requests failed (100%, over batch.error_budget 50%)" in message
    assert "server_error: The model failed on this request" in message
    assert "This looks systemic" in message and "all-fail.parquet" in message
    output = pq.read_table(tmp_path / "data/output/all-fail.parquet")
    assert set(output.column("attempts").to_pylist()) == {1}  # no row-by-row retries
    assert set(output.column("status").to_pylist()) == {"failed"}
