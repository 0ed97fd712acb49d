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


@pytest.mark.parametrize("seed", range(8))
def test_places_from_discovery_are_the_lookups(seed: int) -> None:
    """Results that carry their places among the plan's ids (``_item``, as discovery gives
    them) are placed from those; this run's answers (no place) are looked up; places that
    name other ids are not trusted."""
    from tablebatch.jobs.join import _places
    from tablebatch.jobs.rows import ITEM

    rng = random.Random(seed)
    n = rng.randrange(1, 200)
    ids = pa.array([f"k-{i}" for i in rng.sample(range(1000), n)], pa.string())
    picked = rng.sample(range(n), rng.randrange(0, n + 1))
    found = [i for i in picked if rng.random() < 0.8]
    fresh = [i for i in picked if i not in found]
    order = [(i, i) for i in found] + [(i, None) for i in fresh]
    rng.shuffle(order)
    results = pa.table(
        {
            "custom_id": ids.take(pa.array([i for i, _ in order], pa.int64())),
            ITEM: pa.array([p for _, p in order], pa.int64()),
        }
    )
    expected = pc.index_in(ids, value_set=results["custom_id"]).to_pylist()
    assert _places(ids, results).to_pylist() == expected
    if len(found) > 1:  # places of other ids: looked up instead
        wrong = results.set_column(1, ITEM, pc.fill_null(pc.add(results[ITEM], 1), None))
        wrong = wrong.set_column(1, ITEM, pc.if_else(pc.less(wrong[ITEM], n), wrong[ITEM], 0))
        assert _places(ids, wrong).to_pylist() == expected
