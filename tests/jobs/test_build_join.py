"""Checking the table, building requests, and joining results back, in any order."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pyarrow as pa
import pytest

from tablebatch.jobs.build import (
    Requests,
    check_table,
    custom_id_for,
    request_id,
    shard,
)
from tablebatch.jobs.config import parse_config
from tablebatch.jobs.errors import DataError
from tablebatch.jobs.join import ModelAnswers, join
from tablebatch.jobs.plan import build_requests
from tablebatch.jobs.rows import RESULT_SCHEMA, results_table


def _config(**changes: object):
    data = {
        "name": "j",
        "kind": "classification",
        "input": {"path": "x.csv", "id_column": "id"},
        "prompt": {
            "system": "Sentiment of {product}.",
            "template": "Label: positive, negative\n\n{text}",
        },
        "model": "m",
        "params": {"max_tokens": 4},
        "labels": ["positive", "negative"],
        **changes,
    }
    return parse_config(data, "j.yaml")


def _table(n: int = 5) -> pa.Table:
    return pa.table(
        {
            "id": [f"id{i}" for i in range(n)],
            "product": ["kettle"] * n,
            "text": [f'text {i}, with "quotes"\nand é' for i in range(n)],
            "label": ["positive"] * n,
        }
    )


def test_check_table_finds_what_is_wrong() -> None:
    config = _config()
    with pytest.raises(DataError, match=r"template names column 'text'.*Did you mean 'txt'"):
        check_table(_table().rename_columns(["id", "product", "txt", "label"]), config, "x.csv")
    with pytest.raises(DataError, match=r"input\.id_column names column 'id'"):
        check_table(_table().drop(["id"]), config, "x.csv")
    dup = pa.table({"id": ["a", "b", "a"], "product": ["p"] * 3, "text": ["t"] * 3})
    with pytest.raises(DataError, match=r"repeats 1 id\(s\): 'a' \(2x\)"):
        check_table(dup, config, "x.csv")
    nulls = pa.table({"id": ["a", None, " "], "product": ["p"] * 3, "text": ["t"] * 3})
    with pytest.raises(DataError, match=r"empty in 2 row\(s\) \(data rows 2, 3\)"):
        check_table(nulls, config, "x.csv")
    with pytest.raises(DataError, match="no rows"):
        check_table(_table().slice(0, 0), config, "x.csv")
    assert check_table(_table(3), config, "x.csv").to_pylist() == ["id0", "id1", "id2"]


def test_custom_ids_are_stable_and_fit_every_provider() -> None:
    assert custom_id_for("r001") == "id-r001"
    weird = custom_id_for("a/b c?é")
    assert weird == custom_id_for("a/b c?é") and weird.startswith("h-")
    import re

    for row_id in ("r001", "a/b c?é", "x" * 500, "7"):
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", custom_id_for(row_id))


def test_build_renders_system_template_and_params() -> None:
    config = _config()
    table = _table(2)
    plan = build_requests(table, config, check_table(table, config, "x"), "m")
    custom_id, item = plan.items[0]
    request = orjson.loads(item)
    assert request["custom_id"] == custom_id == request_id(orjson.dumps(request["body"]))
    assert custom_id.startswith("k-") and plan.custom_ids[0].as_py() == custom_id
    assert request["body"] == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Sentiment of kettle."},
            {
                "role": "user",
                "content": 'Label: positive, negative\n\ntext 0, with "quotes"\nand é',
            },
        ],
        "max_tokens": 4,
    }


def test_empty_and_oversized_rows_are_skipped_not_sent() -> None:
    config = _config(batch={"max_request_bytes": 400})
    table = pa.table(
        {"id": ["a", "b", "c"], "product": ["p"] * 3, "text": ["fine", None, "x" * 1000]}
    )
    plan = build_requests(table, config, check_table(table, config, "x"), "m")
    assert [c for c, _ in plan.items] == [plan.custom_ids[0].as_py()]
    assert plan.custom_ids.to_pylist()[1:] == ["id-b", "id-c"]  # left out: by their rows
    assert "prompt is empty" in plan.skipped["id-b"]
    assert "over batch.max_request_bytes (400)" in plan.skipped["id-c"]


def test_shards_by_count_and_bytes() -> None:
    config = _config(batch={"max_requests": 2})
    table = _table(5)
    plan = build_requests(table, config, check_table(table, config, "x"), "m")
    assert [len(s) for s in shard(plan.items, config)] == [2, 2, 1]


def test_join_does_not_depend_on_the_order_results_come_in() -> None:
    config = _config(gold_column="label")
    table = _table(50)
    ids = check_table(table, config, "x")
    plan = build_requests(table, config, ids, "m")
    rows = [
        (c, "completed", "Positive." if i % 3 else "neg?", None, "batch_1", 10, 1)
        for i, c in enumerate(plan.custom_ids.to_pylist())
    ]
    random.Random(5).shuffle(rows)
    columns = dict(zip(RESULT_SCHEMA.names, zip(*rows, strict=True), strict=True))
    results = results_table({k: list(v) for k, v in columns.items()})
    results = results.append_column("attempts", pa.array([1] * 50, pa.int32()))
    out = join(table, config, [ModelAnswers(plan, results)])
    assert out.column("id").to_pylist() == ids.to_pylist()
    assert out.column_names == [
        "id",
        "product",
        "text",
        "label_input",
        "answer",
        "status",
        "error",
        "batch_id",
        "attempts",
        "prompt_tokens",
        "completion_tokens",
        "cached_tokens",
        "cache_write_tokens",
        "request_id",
        "shared_with",
        "label",
    ]
    labels = out.column("label").to_pylist()
    assert labels == ["INVALID" if i % 3 == 0 else "positive" for i in range(50)]
    assert out.column("text").to_pylist() == table.column("text").to_pylist()


def test_rows_without_results_are_failed_and_skipped_rows_say_why() -> None:
    config = _config()
    table = pa.table({"id": ["a", "b", "c"], "product": ["p"] * 3, "text": ["good", None, "bad"]})
    plan = build_requests(table, config, check_table(table, config, "x"), "m")
    results = results_table(
        {
            "custom_id": [plan.custom_ids[0].as_py()],
            "status": ["completed"],
            "answer": ["positive"],
            "error": [None],
            "batch_id": ["b1"],
            "prompt_tokens": [5],
            "completion_tokens": [1],
        }
    ).append_column("attempts", pa.array([2], pa.int32()))
    out = join(table, config, [ModelAnswers(plan, results)])
    assert out.column("status").to_pylist() == ["completed", "skipped", "failed"]
    assert out.column("attempts").to_pylist() == [2, 0, 0]
    assert "no result was collected" in out.column("error")[2].as_py()
    assert out.column("label").to_pylist() == ["positive", None, None]


def test_requests_select_and_shard_in_input_order() -> None:
    pairs = [(f"c{i}", b'{"custom_id":"c%d","body":{}}' % i) for i in range(10)]
    requests = Requests.from_pairs(pairs)
    assert list(requests) == pairs and requests[3] == pairs[3]
    assert [c for c, _ in requests.select(["c7", "c2", "c9"])] == ["c2", "c7", "c9"]
    size = len(pairs[0][1]) + 1
    assert [len(s) for s in requests.shards(4, 10**6)] == [4, 4, 2]
    assert [len(s) for s in requests.shards(100, 16 + 3 * size)] == [3, 3, 3, 1]
    with pytest.raises(ValueError, match="more than a batch may hold"):
        requests.shards(100, 20)


def test_custom_ids_in_arrow_match_the_row_by_row_rule() -> None:
    from tablebatch.jobs.build import custom_ids_for

    ids = ["r001", "a/b c?é", "x" * 41, "ok_-1", "", "ünï", "r002"]
    assert custom_ids_for(pa.array(ids)).to_pylist() == [custom_id_for(i) for i in ids]
    assert custom_ids_for(pa.array(["a", "b"])).to_pylist() == ["id-a", "id-b"]


def test_ids_of_any_column_type_read_as_before() -> None:
    from tablebatch.jobs.text import id_texts

    assert id_texts(pa.array([1, 22, None])).to_pylist() == ["1", "22", ""]
    assert id_texts(pa.array([1.0, 2.5, float("nan")])).to_pylist() == ["1.0", "2.5", ""]
    assert id_texts(pa.chunked_array([["a"], ["b"]])).to_pylist() == ["a", "b"]


def test_rows_render_a_shard_at_a_time_as_a_whole_build_would() -> None:
    from tablebatch.jobs.plan import plan_requests

    config = _config(batch={"max_request_bytes": 400})
    table = pa.table(
        {
            "id": [f"r{i}" for i in range(7)],
            "product": ["p"] * 7,
            "text": ["a", None, "x" * 1000, "b", " ", "c", "d"],
        }
    )
    ids = check_table(table, config, "x")
    whole = build_requests(table, config, ids, "m")
    plan = plan_requests(table, config, ids, "m")
    assert len(plan.rows) == 4  # the empty prompts and the request too large are known
    assert set(plan.skipped) == {"id-r1", "id-r2", "id-r4"}
    pairs, skipped = [], {}
    for start in range(0, len(plan.rows), 2):
        requests, left_out = plan.rows.slice(start, 2).render()
        pairs += list(requests)
        skipped |= left_out
    assert pairs == list(whole.items) and not skipped
    r0, r6 = plan.custom_ids[0].as_py(), plan.custom_ids[6].as_py()
    picked = plan.rows.select([r6, r0])
    assert [c for c, _ in picked.render()[0]] == [r0, r6]  # still in input order


def test_progress_reports_at_most_every_so_often_and_at_the_end() -> None:
    from tablebatch.api import Batch
    from tablebatch.jobs.progress import Progress

    now = [0.0]
    reports: list[tuple[int, int]] = []
    progress = Progress(30, lambda e, t: reports.append((e, t)), every_s=5, clock=lambda: now[0])

    def batch(id_: str, done: int) -> Batch:
        return Batch(id=id_, name=id_, status="processing", request_count=10, completed_count=done)

    progress.update(batch("a", 1))
    now[0] = 1.0
    progress.update(batch("b", 4))  # too soon: not reported
    now[0] = 6.0
    progress.update(batch("a", 10))
    now[0] = 7.0
    progress.update(batch("b", 10))
    progress.update(batch("c", 10))  # all ended: reported at once
    assert reports == [(1, 30), (14, 30), (30, 30)]


def test_spooled_answers_join_chunk_by_chunk_as_in_memory(tmp_path) -> None:
    from tablebatch.io import read_table, table_writer
    from tablebatch.jobs.join import join_chunks
    from tablebatch.jobs.spool import Spool

    config = _config(gold_column="label")
    table = _table(23)
    ids = check_table(table, config, "x")
    plan = build_requests(table, config, ids, "m")
    cids = plan.custom_ids.to_pylist()
    rows = [(c, "completed", f"positive {i}", None, f"b{i % 3}", 10, 1) for i, c in enumerate(cids)]
    random.Random(7).shuffle(rows)
    columns = dict(zip(RESULT_SCHEMA.names, zip(*rows, strict=True), strict=True))
    results = results_table({k: list(v) for k, v in columns.items()})
    spool = Spool(tmp_path / "spool")
    slim = pa.concat_tables([spool.put(results.slice(s, 5)) for s in range(0, 23, 5)])
    assert "answer" not in slim.column_names and len(list((tmp_path / "spool").iterdir())) == 5
    slim = slim.append_column("attempts", pa.array([1] * 23, pa.int32()))
    full = results.append_column("attempts", pa.array([1] * 23, pa.int32()))
    expected = join(table, config, [ModelAnswers(plan, full)])
    spooled = ModelAnswers(plan, slim, spool=spool)
    chunks = list(join_chunks(table, config, [spooled], rows=4))
    assert [c.num_rows for c in chunks] == [4, 4, 4, 4, 4, 3]
    assert pa.concat_tables(chunks).equals(expected)
    for suffix in (".parquet", ".csv"):
        path = str(tmp_path / f"out{suffix}")
        with table_writer(path, chunks[0].schema) as write:
            for chunk in chunks:
                write(chunk)
        assert read_table(path)["answer"].to_pylist() == expected["answer"].to_pylist()
    spool.remove()
    assert not (tmp_path / "spool").exists()


def test_spool_take_reads_rows_of_many_files_in_any_order_with_gaps(tmp_path: Path) -> None:
    from tablebatch.jobs.spool import Spool

    spool = Spool(tmp_path / "spool")
    slim = pa.concat_tables(
        [
            spool.put(
                results_table(
                    {
                        "custom_id": [f"{f}-{i}" for i in range(30)],
                        "status": ["completed"] * 30,
                        "answer": [f"a{f}-{i}" for i in range(30)],
                        "error": [None] * 30,
                        "batch_id": [f"b{f}-{i % 2}" for i in range(30)],  # a file, 2 batches
                        "prompt_tokens": [1] * 30,
                        "completion_tokens": [1] * 30,
                    }
                )
            )
            for f in range(12)
        ]
    )
    order = list(range(slim.num_rows))
    random.Random(3).shuffle(order)
    picked = slim.take(pa.array(order[:200]))
    gaps = pa.array([i % 7 == 0 for i in range(200)])
    files = pa.compute.if_else(gaps, None, picked["_file"].combine_chunks())
    rows = picked["_row"].combine_chunks()
    expected = [
        None if gap else f"a{f}-{r}"
        for gap, f, r in zip(
            gaps.to_pylist(), picked["_file"].to_pylist(), rows.to_pylist(), strict=True
        )
    ]
    assert spool.take(files, rows, "answer").to_pylist() == expected
    batches = spool.take(files, rows, "batch_id")  # kept as a dictionary, given as text
    assert batches.type == pa.string()
    assert batches.to_pylist() == [
        None if a is None else f"b{a[1:].split('-')[0]}-{int(a.split('-')[1]) % 2}"
        for a in expected
    ]
    assert spool.take(pa.nulls(2, pa.int32()), rows.slice(0, 2), "answer").to_pylist() == [
        None,
        None,
    ]


def test_spool_refers_to_a_cache_file_it_keeps_reading_once_removed(tmp_path: Path) -> None:
    """Results read whole from a result cache's file are not written again: the spool
    reads their texts from that file, opened when referred to, so a file removed (or
    replaced) meanwhile still gives the texts it had; filtered rows keep their place."""
    import pyarrow.parquet as pq

    from tablebatch.jobs import spool as spooling

    results = results_table(
        {
            "custom_id": [f"r{i}" for i in range(10)],
            "status": ["completed"] * 10,
            "answer": [f"answer {i}" for i in range(10)],
            "error": [None] * 10,
            "batch_id": ["b1"] * 10,
            "prompt_tokens": [1] * 10,
            "completion_tokens": [1] * 10,
        }
    )
    cached = tmp_path / "batch_1.parquet"
    pq.write_table(results, cached)
    spool = spooling.Spool(tmp_path / "spool")
    slim = spool.refer(cached, pq.read_table(cached)).filter(
        pa.array([i % 3 == 0 for i in range(10)])
    )
    assert "answer" not in slim.column_names and not (tmp_path / "spool").exists()
    cached.unlink()
    pq.write_table(results.slice(0, 1), tmp_path / "other.parquet")
    (tmp_path / "other.parquet").rename(cached)  # replaced by another file of that name
    answers = spooling.text_column(slim, "answer", spool)
    assert answers.to_pylist() == ["answer 0", "answer 3", "answer 6", "answer 9"]
    assert spooling.text_column(slim, "batch_id", spool).to_pylist() == ["b1"] * 4
    spool.remove()
    foreign = tmp_path / "foreign.parquet"  # no text columns: written, as put does
    pq.write_table(pa.table({"x": [1]}), foreign)
    wrote = spooling.Spool(tmp_path / "spool2")
    slim = wrote.refer(foreign, results)
    assert spooling.text_column(slim, "answer", wrote).to_pylist()[:2] == ["answer 0", "answer 1"]
    assert (tmp_path / "spool2").exists()
    wrote.remove()
