"""Each row's place among the results and its sharing count, numbered once, are what the
plain lookups give."""

from __future__ import annotations

import random

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tablebatch.jobs.join import positions, sharing


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("nulls", [False, True])
def test_positions_match_the_plain_lookups(seed: int, nulls: bool) -> None:
    rng = random.Random(seed)
    n = rng.randrange(0, 300)
    ids = [f"k-{rng.randrange(max(n // 2, 1))}" for _ in range(n)]
    if nulls and n:
        ids[rng.randrange(n)] = None
    results = pa.array(sorted({i for i in ids if i} - {ids[0]} if ids else set()), pa.string())
    half = len(ids) // 2
    custom = pa.chunked_array([ids[:half], ids[half:]], pa.string())
    position, shared = positions(custom, results)
    flat = custom.combine_chunks()
    assert position.to_pylist() == pc.index_in(flat, value_set=results).to_pylist()
    assert shared.to_pylist() == sharing(flat).to_pylist()
    assert shared.type == pa.int64()
    where = {r: i for i, r in enumerate(results.to_pylist())}  # and by hand, nulls or not
    assert position.to_pylist() == [where.get(i) if i else None for i in ids]
    if not nulls:
        assert shared.to_pylist() == [ids.count(i) for i in ids]
