"""Taking rows chunk by chunk gives what Arrow's own take gives."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from tablebatch.jobs.take import take


def _chunked(n: int, sizes: list[int]) -> pa.Table:
    rows = pa.table({"id": [f"r{i}" for i in range(n)], "n": list(range(n))})
    out, start = [], 0
    for size in sizes:
        out.append(rows.slice(start, size))
        start += size
    return pa.concat_tables(out)


@pytest.mark.parametrize("seed", range(5))
def test_take_matches_arrows_own(seed: int) -> None:
    rng = random.Random(seed)
    sizes = [rng.randrange(0, 40) for _ in range(8)]
    n = sum(sizes)
    table = _chunked(n, sizes)
    for count in (0, 1, n // 2, n):
        indices = pa.array([rng.randrange(n) for _ in range(count)] if n else [], pa.int64())
        assert take(table, indices).equals(table.take(indices))
        assert take(table["id"], indices).equals(table["id"].take(indices))
    assert take(table, pa.chunked_array([[1, 0], [2]], pa.int64())).equals(table.take([1, 0, 2]))
    if n:
        holes = pa.array([None, n - 1, None, 0, None], pa.int64())
        assert take(table, holes).equals(table.take(holes))
        assert take(table["n"], holes).to_pylist() == table["n"].take(holes).to_pylist()


def test_an_index_out_of_bounds_is_an_error() -> None:
    table = _chunked(10, [5, 5])
    with pytest.raises(IndexError):
        take(table, pa.array([3, 10]))


def test_unsigned_indices_as_sort_indices_gives() -> None:
    table = _chunked(10, [4, 6])
    indices = pa.array([9, 0, 5], pa.uint64())
    assert take(table, indices).equals(table.take(indices))


def test_a_plain_array_is_taken_as_arrow_takes_it() -> None:
    values = pa.array(["a", "b", "c"])
    assert take(values, pa.array([2, None, 0])).to_pylist() == ["c", None, "a"]


def test_distinct_and_single() -> None:
    """``distinct`` finds a value twice across chunks (one sort, no hashing); ``single``
    gives a chunked array's only chunk without copying it."""
    from tablebatch.jobs.take import distinct, single

    parts = pa.chunked_array([["k-3", "k-1"], [], ["k-2", None]], pa.string())
    assert distinct(parts) and distinct(pa.array([], pa.string())) and distinct(pa.array(["a"]))
    assert not distinct(pa.chunked_array([["k-3", "k-1"], ["k-2", "k-3"]]))
    assert not distinct(pa.array([None, "a", None]))  # nulls too: one result per id
    one = pa.array(["x" * 100] * 10)
    assert single(pa.chunked_array([one])).buffers()[2].address == one.buffers()[2].address
    assert single(parts).to_pylist() == ["k-3", "k-1", "k-2", None]


def test_chained_puts_arrays_and_chunked_arrays_one_after_another() -> None:
    from tablebatch.jobs.take import chained

    parts = [
        pa.chunked_array([["a"], ["b", None]]),
        pa.array(["c"]),
        pa.chunked_array([], pa.string()),
    ]
    joined = chained(parts, pa.string())
    assert joined.to_pylist() == ["a", "b", None, "c"] and joined.num_chunks == 3
    assert chained([], pa.string()).to_pylist() == []
