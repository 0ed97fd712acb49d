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


def test_a_timeout_names_the_batch_and_the_command_that_resumes(project, monkeypatch) -> None:
    monkeypatch.setenv("TABLEBATCH_SERVER_FAULTS__PROCESSING_RATE", "20")
    config = _job(project, "slow", batch={"max_wait_s": 0.5})
    with pytest.raises(JobFailed) as info:
        batch_job(str(config))
    message = str(info.value)
    assert "batch batch_" in message and "(slow--answer-" in message
    assert "is still processing after" in message and "batch.max_wait_s" in message
    assert f"tablebatch run {config}" in message


def test_a_batch_cancelled_on_the_server_keeps_its_answers(
    project, server_factory, monkeypatch, tmp_path
) -> None:
    import threading
    import time

    from tablebatch.api import BatchClient

    server = server_factory(faults={"processing_rate": 100})
    monkeypatch.setenv("TB_ANY_KEY", "any")
    config = _job(
        project,
        "cancelled",
        api={"base_url": server.url, "api_key_env": "TB_ANY_KEY"},
        batch={"max_requests": 1000, "max_attempts": 3, "poll_interval_s": 0.05},
    )
    reports: list = []
    runner = threading.Thread(target=lambda: reports.append(batch_job(str(config))))
    runner.start()
    with BatchClient(server.url) as client:
        while True:
            batches = list(client.iter_batches())
            if batches and batches[0].completed_count >= 30:
                client.cancel(batches[0].id)
                break
            time.sleep(0.01)  # the server runs at its own pace: no need to hammer it
    runner.join(60)
    (report,) = reports
    output = pq.read_table(tmp_path / "data/output/cancelled.parquet")
    status = output.column("status").to_pylist()
    answered = status.count("completed")
    assert answered >= 30 and status.count("cancelled") == ROWS - answered
    assert report["rows_by_status"] == {"completed": answered, "cancelled": ROWS - answered}
    errors = [
        e
        for e, s in zip(output.column("error").to_pylist(), status, strict=True)
        if s == "cancelled"
    ]
    assert all("was cancelled" in e for e in errors)

    again = batch_job(str(config))  # a later run sends only the rest
    assert again["rows_by_status"] == {"completed": ROWS}
    store = server.app.state.store
    held = store.list_batches(10, None, None, None)[0]
    assert sum(b.completed_count for b in held) == ROWS  # nothing answered twice
    assert sorted(b.request_count for b in held) == [ROWS - answered, ROWS]
