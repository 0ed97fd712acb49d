"""What a stage still sends: from the places discovery found the results at, the same as
from their ids."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from tablebatch.jobs.discover import unanswered
from tablebatch.jobs.rows import ITEM


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("retry_invalid", [False, True])
def test_unanswered_by_place_is_unanswered_by_id(seed: int, retry_invalid: bool) -> None:
    rng = random.Random(seed)
    n = rng.randrange(1, 300)
    ids = pa.array([f"k-{i:04d}" for i in rng.sample(range(10_000), n)], pa.string())
    found_at = rng.sample(range(n), rng.randrange(0, n + 1))
    statuses = [rng.choice(["completed", "invalid", "failed", "cancelled"]) for _ in found_at]
    found = pa.table(
        {
            "custom_id": ids.take(pa.array(found_at, pa.int64())),
            "status": pa.array(statuses, pa.string()),
        }
    )
    exhausted = ids.take(pa.array(rng.sample(range(n), min(n, 3)), pa.int64()))
    placed = found.append_column(ITEM, pa.array(found_at, pa.int64()))
    for gone in (None, exhausted):
        by_id = unanswered(ids, found, retry_invalid, gone)
        assert unanswered(ids, placed, retry_invalid, gone).to_pylist() == by_id.to_pylist()
    settled = {i for i, s in zip(found_at, statuses, strict=True) if s == "completed"}
    if not retry_invalid:
        settled |= {i for i, s in zip(found_at, statuses, strict=True) if s == "invalid"}
    expected = [v for i, v in enumerate(ids.to_pylist()) if i not in settled]
    assert unanswered(ids, placed, retry_invalid).to_pylist() == expected  # by hand too
