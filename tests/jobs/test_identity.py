"""Request ids known again from the previous output: the same ids as rendering every row
gives, whatever changed in the table, with only the new or changed rows rendered."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tablebatch.io import table_writer
from tablebatch.jobs.build import Renderer, check_table
from tablebatch.jobs.config import parse_config
from tablebatch.jobs.identity import PriorOutput, with_keys
from tablebatch.jobs.join import ModelAnswers, join
from tablebatch.jobs.plan import Plan, plan_requests
from tablebatch.jobs.rows import results_table
from tablebatch.jobs.schema import JobConfig


def _config(**changes: Any) -> JobConfig:
    data = {
        "name": "j",
        "kind": "classification",
        "input": {"path": "x.csv", "id_column": "id"},
        "prompt": {"system": "Reviews of {product}.", "template": "{text} ({stars} stars)"},
        "model": "m",
        "labels": ["positive", "negative"],
        "batch": {"max_request_bytes": 2_000},
        **changes,
    }
    return parse_config(data, "j.yaml")


def _table(n: int = 200) -> pa.Table:
    texts = [f"review {i % 150}" for i in range(n)]  # some rows send the same request
    texts[7] = ""  # with {stars}, not an empty prompt
    texts[11] = "x" * 5_000  # over max_request_bytes: skipped, never a request id
    return pa.table(
        {
            "id": [f"r{i}" for i in range(n)],
            "product": ["kettle" if i % 3 else "toaster" for i in range(n)],
            "text": texts,
            "stars": pa.array([i % 5 + 0.5 if i % 7 else None for i in range(n)], pa.float64()),
        }
    )


def _plan(
    table: pa.Table, config: JobConfig, prior: PriorOutput | None = None, model: str = "m"
) -> Plan:
    return plan_requests(table, config, check_table(table, config, "x"), model, prior=prior)


def _write_output(table: pa.Table, config: JobConfig, path: Path) -> None:
    """The output a run writes (no answers: which rows were answered does not matter)."""
    plans = [_plan(table, config, model=m) for m in config.model_names]
    output = join(table, config, [ModelAnswers(p, results_table()) for p in plans])
    with table_writer(str(path), with_keys(output.schema, config, plans)) as write:
        write(output)


@pytest.fixture
def rendered(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many rows each ``Renderer.identify`` call rendered (a spy: it still renders)."""
    counts: list[int] = []
    identify = Renderer.identify

    def spy(self: Renderer, table: pa.Table) -> Any:
        counts.append(table.num_rows)
        return identify(self, table)

    monkeypatch.setattr(Renderer, "identify", spy)
    return counts


def _same(plan: Plan, fresh: Plan) -> None:
    assert plan.custom_ids.to_pylist() == fresh.custom_ids.to_pylist()
    assert plan.rows.ids.to_pylist() == fresh.rows.ids.to_pylist()
    assert plan.rows.rows.to_pylist() == fresh.rows.rows.to_pylist()
    assert plan.skipped == fresh.skipped


def test_a_changed_table_renders_only_its_new_and_edited_rows(
    tmp_path: Path, rendered: list[int]
) -> None:
    config, path = _config(), tmp_path / "out.parquet"
    before = _table()
    _write_output(before, config, path)
    rows = before.to_pylist()
    rng = random.Random(3)
    rows = [r for i, r in enumerate(rows) if i not in (20, 21, 22)]  # deleted
    for r in rows[30:35]:  # edited: text, a float, a null
        r["text"] += " (edited)"
    rows[40]["stars"] = 4.25
    rows[41]["stars"] = None if rows[41]["stars"] is not None else 1.0
    rows[42]["product"] = "blender"  # a column only the system prompt uses
    for i in range(10):  # new rows, one an old row's text (its request is known already)
        rows.append({"id": f"n{i}", "product": "kettle", "text": f"new {i}", "stars": 1.5})
    rows.append({"id": "n-old", **{k: v for k, v in rows[50].items() if k != "id"}})
    rng.shuffle(rows)  # and re-sorted
    after = pa.Table.from_pylist(rows, schema=before.schema)
    prior = PriorOutput.open(str(path))
    assert prior is not None
    rendered.clear()
    plan = _plan(after, config, prior)
    assert sum(rendered) == 5 + 3 + 11 + 1  # edited, new, and the oversized row again
    assert plan.known == after.num_rows - 20 - 1  # all but those and the empty prompt
    rendered.clear()
    _same(plan, _plan(after, config))
    assert sum(rendered) == after.num_rows - 1  # every row but the empty one is rendered
    assert "id-r11" in plan.skipped and "over batch.max_request_bytes" in plan.skipped["id-r11"]


def test_another_prompt_or_model_renders_every_row(tmp_path: Path, rendered: list[int]) -> None:
    config, path = _config(), tmp_path / "out.parquet"
    table = _table()
    _write_output(table, config, path)
    prior = PriorOutput.open(str(path))
    for changed in (
        _config(prompt={"system": "Reviews of {product}!", "template": "{text} ({stars} stars)"}),
        _config(model="m2"),
        _config(params={"temperature": 0.5}),
        _config(batch={"max_request_bytes": 9_000}),  # another row is sendable now
    ):
        rendered.clear()
        model = changed.model_names[0]
        plan = _plan(table, changed, prior, model)
        assert sum(rendered) == table.num_rows - 1
        _same(plan, _plan(table, changed, model=model))
    rendered.clear()
    _plan(table, config, prior)
    assert sum(rendered) == 1  # the same config again: only the oversized row


def test_input_columns_named_like_output_columns_are_compared_as_written(
    tmp_path: Path, rendered: list[int]
) -> None:
    config = _config(prompt={"template": "{status}: {answer}"})
    table = pa.table(
        {"id": ["a", "b", "c"], "status": ["new", "old", "new"], "answer": ["x", "y", "z"]}
    )
    path = tmp_path / "out.parquet"
    _write_output(table, config, path)  # written as status_input, answer_input
    edited = table.set_column(1, "status", pa.array(["new", "new", "new"]))
    rendered.clear()
    plan = _plan(edited, config, PriorOutput.open(str(path)))
    assert sum(rendered) == 1
    _same(plan, _plan(edited, config))


def test_each_model_of_an_evaluation_keeps_its_own_ids(tmp_path: Path, rendered: list[int]) -> None:
    config = parse_config(
        {
            "name": "e",
            "kind": "evaluation",
            "input": {"path": "x.csv", "id_column": "id"},
            "prompt": {"template": "{q}"},
            "models": ["m1", "m2"],
            "reference_column": "ref",
        },
        "e.yaml",
    )
    table = pa.table({"id": ["1", "2"], "q": ["two?", "three?"], "ref": ["2", "3"]})
    path = tmp_path / "out.parquet"
    _write_output(table, config, path)
    prior = PriorOutput.open(str(path))
    for model in ("m1", "m2"):
        rendered.clear()
        plan = _plan(table, config, prior, model)
        assert sum(rendered) == 0
        _same(plan, _plan(table, config, model=model))


def test_outputs_that_cannot_tell_are_not_used(tmp_path: Path) -> None:
    config, table = _config(), _table(20)
    csv = tmp_path / "out.csv"
    _write_output(table, config, csv)
    assert PriorOutput.open(str(csv)) is None  # CSV has no metadata to key it by
    assert PriorOutput.open(str(tmp_path / "none.parquet")) is None
    torn = tmp_path / "torn.parquet"
    torn.write_bytes(b"PAR1 not really")
    assert PriorOutput.open(str(torn)) is None
    plain = tmp_path / "plain.parquet"  # an output written before outputs had keys
    with table_writer(str(plain), table.schema) as write:
        write(table)
    assert PriorOutput.open(str(plain)) is None
    good = tmp_path / "out.parquet"
    _write_output(table, config, good)
    prior = PriorOutput.open(str(good))
    assert prior is not None
    duplicated = table.append_column("request_id", pa.array(["k-0"] * 20))
    # an output whose id column repeats an id: no reuse (one answer per row is not known)
    twice = pa.concat_tables([duplicated, duplicated])
    with table_writer(str(good), with_keys(twice.schema, config, [_plan(table, config)])) as write:
        write(twice)
    prior = PriorOutput.open(str(good))
    assert prior is not None
    renderer = Renderer(config, "m")
    ids = check_table(table, config, "x")
    assert prior.request_ids(table, ids, renderer, config) is None
    assert pc.all(pc.is_null(_plan(table, config).rows.ids)).as_py() is False


def test_an_output_rewritten_under_another_key_since_it_was_opened_is_not_used(
    tmp_path: Path, rendered: list[int]
) -> None:
    """Another run of the job wrote the output (another prompt) between ``open`` and the
    read: its ids were made under another key, so every row is rendered."""
    config, path = _config(), tmp_path / "out.parquet"
    table = _table()
    _write_output(table, config, path)
    prior = PriorOutput.open(str(path))
    _write_output(table, _config(prompt={"template": "{text}!"}), path)
    rendered.clear()
    plan = _plan(table, config, prior)
    assert sum(rendered) == table.num_rows - 1  # all but the oversized row, as with no output
    _same(plan, _plan(table, config))
