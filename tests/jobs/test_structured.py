"""The structured-output helpers: inline fields as a strict JSON Schema (errors naming the
key), Arrow types, answers checked by jsonschema with the field named, typed values; the
CSV writer's JSON text for lists and objects; multi-label metrics by hand."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tablebatch.api.dialects.anthropic_messages import messages_params
from tablebatch.io import write_table
from tablebatch.jobs.metrics import multilabel_metrics
from tablebatch.jobs.structured import Checker, arrow_type, file_schema, inline_schema, readable

FIELDS = {
    "severity": {"type": "enum", "values": ["low", "high"], "description": "how bad"},
    "amount": {"type": "number", "required": False},
    "when": {"type": "date", "required": False},
    "tags": {"type": "list", "items": "string"},
    "ok": "boolean",
}


def test_inline_fields_become_a_strict_schema() -> None:
    schema = inline_schema(FIELDS)
    assert schema["required"] == list(FIELDS) and schema["additionalProperties"] is False
    assert schema["properties"]["severity"] == {
        "type": "string",
        "enum": ["low", "high"],
        "description": "how bad",
    }
    assert schema["properties"]["amount"] == {"type": ["number", "null"]}
    assert schema["properties"]["when"] == {"type": ["string", "null"], "format": "date"}
    types = {n: arrow_type(s) for n, s in schema["properties"].items()}
    assert types == {
        "severity": pa.string(),
        "amount": pa.float64(),
        "when": pa.date32(),
        "tags": pa.list_(pa.string()),
        "ok": pa.bool_(),
    }
    assert readable(schema).splitlines()[:2] == [
        "- severity: one of low, high — how bad",
        "- amount: a number or null",
    ]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"x": {"type": "decimal"}}, "x.type: unknown type 'decimal'"),
        ({"x": {"type": "enum"}}, "x.values: an enum needs values"),
        ({"x": {"type": "string", "valeus": [1]}}, "x.valeus: unknown key"),
        ({}, "give the fields"),
    ],
)
def test_bad_fields_are_named(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace(".", r"\.").replace("(", r"\(")):
        inline_schema(fields)


def test_a_schema_file_must_be_an_object_schema(tmp_path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"type": "array", "items": {}}))
    with pytest.raises(ValueError, match="must be an object schema"):
        file_schema(path)
    path.write_text(json.dumps({"type": "object", "properties": {"a": {"type": 5}}}))
    with pytest.raises(ValueError, match="is not a valid JSON Schema"):
        file_schema(path)


def test_answers_are_checked_and_typed() -> None:
    checker = Checker(inline_schema(FIELDS))
    good = '{"severity": "low", "amount": 2.5, "when": "2026-03-02", "tags": ["a"], "ok": true}'
    assert checker.problem(good) is None
    assert checker.problem("```json\n" + good + "\n```") is None  # a fence is no error
    assert checker.problem('{"severity": "low"').startswith("not valid JSON")
    bad = good.replace('"low"', '"urgent"')
    assert checker.problem(bad) == "severity: 'urgent' is not one of ['low', 'high']"
    assert "'tags' is a required property" in checker.problem(
        '{"severity": "low", "amount": null, "when": null, "ok": false}'
    )
    assert checker.problem(good.replace("2026-03-02", "March 2")).startswith("when: ")
    columns = checker.columns([good, bad, None], [True, True, False])
    assert columns["when"].to_pylist() == [dt.date(2026, 3, 2), None, None]
    assert columns["tags"].type == pa.list_(pa.string())


def test_csv_holds_lists_and_objects_as_json_text_and_parquet_holds_them_typed(tmp_path) -> None:
    table = pa.table(
        {
            "tags": pa.array([["a", "b"], None], pa.list_(pa.string())),
            "who": pa.array([{"seats": 3}, None], pa.struct([("seats", pa.int64())])),
            "when": pa.array([dt.date(2026, 1, 2), None], pa.date32()),
        }
    )
    write_table(table, str(tmp_path / "out.csv"))
    write_table(table, str(tmp_path / "out.parquet"))
    csv = pacsv.read_csv(tmp_path / "out.csv")
    assert csv.column("tags").to_pylist() == ['["a","b"]', ""]  # CSV: null is empty
    assert csv.column("who").to_pylist() == ['{"seats":3}', ""]
    assert pq.read_table(tmp_path / "out.parquet").equals(table)


def test_multilabel_metrics_by_hand() -> None:
    labels = ["a", "b", "c"]
    predicted = [["a"], ["a", "b"], [], ["c"]]
    gold = [["a"], ["b"], ["c"], ["c", "a"]]
    m = multilabel_metrics(predicted, gold, labels)
    # a: tp 1 (row 0), fp 1 (row 1), fn 1 (row 3) -> P 1/2, R 1/2, F1 1/2
    # b: tp 1 (row 1) -> P 1, R 1, F1 1;  c: tp 1 (row 3), fn 1 (row 2) -> P 1, R 1/2, F1 2/3
    assert m["per_label"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["per_label"]["c"]["f1"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((0.5 + 1 + 2 / 3) / 3)
    # micro: tp 3, fp 1, fn 2 -> P 3/4, R 3/5, F1 2/3
    assert m["micro_f1"] == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert m["subset_accuracy"] == 0.25  # only row 0 is exactly right
    assert m["hamming_loss"] == pytest.approx(3 / 12)  # row 1: b.. a wrong; row 2: c; row 3: a


def test_anthropic_takes_structured_output_as_output_config() -> None:
    schema = inline_schema({"x": "string"})
    body = {
        "model": "claude",
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "j", "schema": schema}},
    }
    params = messages_params(body, 100)
    assert params["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert "response_format" not in params
    with pytest.raises(ValueError, match="JSON schema only"):
        messages_params({**body, "response_format": {"type": "json_object"}}, 100)


def test_multi_label_gold_may_be_a_list_or_text_separated_by_bars() -> None:
    from tablebatch.jobs.kinds.classification import _gold_sets

    labels = ["billing", "bug"]
    as_text = pa.array(["bug|Billing", "", None, '["bug"]', "billing | nonsense"])
    assert _gold_sets(as_text, labels) == [["billing", "bug"], None, None, ["bug"], ["billing"]]
    as_lists = pa.array([["bug", "billing"], [], None], pa.list_(pa.string()))
    assert _gold_sets(as_lists, labels) == [["billing", "bug"], [], None]
