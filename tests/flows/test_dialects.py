"""The same job through every provider's dialect, end to end: the real flow, the real local
server speaking the dialect (``api.base_url: local``), real files. The output tables are
the same but for batch ids; a re-run finds its batch and sends nothing; failed rows are
retried in every dialect."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.job import batch_job
from tests.flows.configs import sentiment_job

PROVIDERS = ("seed", "xai", "openai", "anthropic")
ROOT = Path(__file__).resolve().parents[2]


def _sentiment(name: str, provider: str, **extra: object) -> dict:
    """configs/review-sentiment.yaml, with its API a local server in ``provider``'s dialect."""
    api = {"provider": provider, "base_url": "local"}
    return sentiment_job(name, **{"gold_column": "sentiment", "api": api, **extra})


def _output(root: Path, name: str) -> pa.Table:
    return pq.read_table(root / f"data/output/{name}.parquet")


def test_the_same_job_gives_the_same_table_in_every_dialect(project, tmp_path) -> None:
    reviews = (ROOT / "data/reviews.csv").read_text(encoding="utf-8")
    tables, reports = {}, {}
    for provider in PROVIDERS:
        config = project(
            _sentiment(f"sentiment-{provider}", provider), {"data/reviews.csv": reviews}
        )
        reports[provider] = batch_job(str(config))
        tables[provider] = _output(tmp_path, f"sentiment-{provider}")
    seed = tables["seed"]
    assert seed.num_rows == 24 and set(seed.column("status").to_pylist()) == {"completed"}
    assert reports["seed"]["gold"]["accuracy"] == 1.0
    same = [c for c in seed.column_names if c != "batch_id"]
    for provider in PROVIDERS[1:]:
        table = tables[provider]
        assert table.select(same).equals(seed.select(same)), provider
        ids = set(table.column("batch_id").to_pylist())
        assert len(ids) == 1 and ids.isdisjoint(seed.column("batch_id").to_pylist())
        assert reports[provider]["gold"] == reports["seed"]["gold"]
    ledger = tmp_path / ".tablebatch/anthropic-batches.jsonl"
    assert ledger.exists() and "sentiment-anthropic--answer-" in ledger.read_text()


@pytest.mark.parametrize("provider", PROVIDERS)
def test_failed_rows_are_retried_in_every_dialect(project, tmp_path, monkeypatch, provider):
    words = ["great", "terrible", "fine", "broken", "lovely"]
    lines = ["id,text"] + [
        f"r{i},Review {i}: {words[i % 5]} and {words[i * 3 % 5]}" for i in range(60)
    ]
    files = {"data/reviews.csv": "\n".join(lines) + "\n"}
    job = {
        "input": {"path": "data/reviews.csv", "id_column": "id"},
        "gold_column": None,
        "batch": {"max_attempts": 8},
    }
    clean = project(_sentiment(f"clean-{provider}", provider, **job), files)
    batch_job(str(clean))
    shutil.rmtree(tmp_path / ".tablebatch")  # a fresh server: nothing to find
    monkeypatch.setenv("TABLEBATCH_SERVER_FAULTS__SEED", "7")
    monkeypatch.setenv("TABLEBATCH_SERVER_FAULTS__REQUEST_FAILURE_RATE", "0.2")
    faulty = project(_sentiment(f"faulty-{provider}", provider, **job), files)
    report = batch_job(str(faulty))

    assert report["rows_by_status"] == {"completed": 60}
    output = _output(tmp_path, f"faulty-{provider}")
    assert max(output.column("attempts").to_pylist()) > 1  # failures were real, and retried
    same = [c for c in output.column_names if c not in ("attempts", "batch_id")]
    assert output.select(same).equals(_output(tmp_path, f"clean-{provider}").select(same))
    assert len(report["batches"]) > 1
