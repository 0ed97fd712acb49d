"""The report's "each request once" sums, against Arrow's own group_by on random tables."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tablebatch.jobs.report import Requests, _behind, _requests


def _table(seed: int, rows: int = 2_000) -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = [None if x < 3 else f"k-{x}" for x in rng.integers(0, 400, rows)]
    tokens = {i: int(t) for i, t in zip(range(400), rng.integers(0, 900, 400), strict=True)}
    prompt = [0 if i is None else tokens[int(i[2:])] for i in ids]
    ids_array = pa.array(ids, pa.string())
    counts = pc.value_counts(ids_array)
    shared = pc.take(counts.field("counts"), pc.index_in(ids_array, counts.field("values")))
    return pa.table(
        {
            "request_id": ids_array,
            "prompt_tokens": pa.array(prompt, pa.int64()),
            "completion_tokens": pa.array([None if p % 7 == 0 else p // 3 for p in prompt]),
            "shared_with": pc.subtract(shared, 1),
        }
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("shared_with", [True, False])
def test_each_request_counts_once_as_group_by_counts_it(seed: int, shared_with: bool) -> None:
    table = _table(seed)
    if not shared_with:  # an output of before the column: every id numbered
        table = table.drop_columns(["shared_with"])
    chunked = pa.concat_tables([table.slice(0, 700), table.slice(700)])  # two chunks
    once = chunked.group_by("request_id").aggregate(
        [("prompt_tokens", "max"), ("completion_tokens", "max")]
    )
    numbered = Requests(chunked)
    assert _behind(chunked, numbered) == {
        "prompt": pc.sum(once["prompt_tokens_max"]).as_py(),
        "completion": pc.sum(once["completion_tokens_max"]).as_py(),
    }
    assert numbered.distinct == len(pc.unique(table["request_id"]))  # nulls: one more
    if shared_with:
        assert _requests(chunked, {"sent": 5}, numbered)["distinct"] == numbered.distinct
    rows = np.arange(table.num_rows) % 2 == 0  # a mask, as for one model of several
    half = table.filter(pa.array(rows)).group_by("request_id").aggregate([("prompt_tokens", "max")])
    assert (
        numbered.once(chunked["prompt_tokens"], rows) == pc.sum(half["prompt_tokens_max"]).as_py()
    )


def test_no_rows() -> None:
    table = _table(1).slice(0, 0)
    assert _behind(table, Requests(table)) == {"prompt": 0, "completion": 0}


@pytest.mark.parametrize("seed", [1, 2])
def test_the_ids_of_rows_alone_are_not_needed(seed: int) -> None:
    """The report's slim columns drop the request id of a row alone with its request (as
    ``report_columns`` does): the sums and the distinct count stay the same."""
    table = _table(seed)
    alone = pc.equal(table["shared_with"], 0)
    slim = table.set_column(
        0, "request_id", pc.if_else(alone, pa.scalar(None, pa.string()), table["request_id"])
    )
    full, slimmed = Requests(table), Requests(slim)
    assert slimmed.distinct == full.distinct
    assert _behind(slim, slimmed) == _behind(table, full)
