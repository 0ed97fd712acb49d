"""Each distinct request and the first row that carries it, in table order: what an Arrow
group_by (min row) sorted by row gives."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from tablebatch.jobs.plan import _first_rows


@pytest.mark.parametrize("seed", range(5))
def test_first_rows_match_a_group_by(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randrange(0, 500)
    rows = sorted(rng.sample(range(3 * n + 1), n))  # ascending, with gaps (skipped rows)
    ids = [f"k-{rng.randrange(max(n // 3, 1))}" for _ in range(n)]
    table = pa.table({"id": pa.array(ids, pa.string()), "row": pa.array(rows, pa.uint64())})
    first = table.group_by("id", use_threads=False).aggregate([("row", "min")]).sort_by("row_min")
    got_ids, got_rows, codes = _first_rows(
        table["id"].combine_chunks(), table["row"].combine_chunks()
    )
    assert got_ids.to_pylist() == first["id"].to_pylist()
    assert [got_ids[int(c)].as_py() for c in codes] == ids  # each row's number among them
    assert got_rows.to_pylist() == first["row_min"].to_pylist()
    assert got_rows.type == pa.uint64()
