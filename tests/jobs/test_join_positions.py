"""Each row's place among the results and its sharing count, numbered once, are what the
plain lookups give."""

from __future__ import annotations

import random

import numpy as np
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


@pytest.mark.parametrize("seed", range(8))
def test_positions_from_the_plan_s_numbers_are_the_lookups(seed: int) -> None:
    """A plan's numbered rows (rows left out at -1, known by their row ids) give the same
    positions and sharing counts as numbering the ids again."""
    from tablebatch.jobs.plan import Numbered

    rng = random.Random(seed)
    n = rng.randrange(0, 200)
    ids = [f"k-{rng.randrange(max(n // 3, 1))}" for _ in range(n)]
    left = {i for i in range(n) if rng.random() < (0.2 if seed % 2 else 1.0 if seed == 4 else 0)}
    ids = [f"id-{i}" if i in left else v for i, v in enumerate(ids)]
    distinct = list(dict.fromkeys(v for i, v in enumerate(ids) if i not in left))
    codes = np.array([-1 if i in left else distinct.index(v) for i, v in enumerate(ids)])
    numbered = Numbered(pa.array(distinct, pa.string()), codes.astype(np.int32))
    answered = [v for v in distinct if rng.random() < 0.7] + [f"id-{i}" for i in left if i % 2]
    rng.shuffle(answered)
    results = pa.array(answered, pa.string())
    custom = pa.array(ids, pa.string())
    position, shared = positions(custom, results, numbered)
    expected, counted = positions(custom, results)
    assert position.to_pylist() == expected.to_pylist()
    assert shared.to_pylist() == counted.to_pylist()
