"""The result cache keeps an ended batch's results, and only gives them back for that batch
as it ended: a batch that is running, or that the API now describes otherwise, is read
from the API."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from tablebatch.api import Batch
from tablebatch.jobs.result_cache import ResultCache, cache_folder


def _batch(status: str = "completed", completed: int = 2) -> Batch:
    return Batch(
        id="batch_1", name="job--answer", status=status, request_count=2, completed_count=completed
    )


RESULTS = pa.table({"custom_id": ["a", "b"], "answer": ["yes", "no"]})


def test_an_ended_batch_is_kept_and_given_back(tmp_path: Path) -> None:
    cache = ResultCache(cache_folder(tmp_path, "job"))
    cache.put(_batch(), RESULTS)
    assert cache.get(_batch()).equals(RESULTS)
    assert cache.hits == 1
    assert list((tmp_path / ".tablebatch/results/job").iterdir()) == [
        tmp_path / ".tablebatch/results/job/batch_1.parquet"
    ]


def test_a_running_batch_is_never_kept(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    cache.put(_batch("processing", 1), RESULTS.slice(0, 1))
    assert not list(tmp_path.iterdir())
    assert cache.get(_batch("processing", 1)) is None


def test_a_batch_described_otherwise_is_read_again(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    cache.put(_batch("cancelled", 1), RESULTS.slice(0, 1))
    assert cache.get(_batch("completed", 2)) is None
    assert cache.get(_batch("cancelled", 1)).num_rows == 1
    (tmp_path / "batch_1.parquet").write_bytes(b"PAR1 torn")
    assert cache.get(_batch("cancelled", 1)) is None
    assert cache.hits == 1


def test_a_cache_that_cannot_be_written_costs_only_a_read(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    cache = ResultCache(blocked / "results")  # under a file: cannot be made
    cache.put(_batch(), RESULTS)
    assert cache.get(_batch()) is None
