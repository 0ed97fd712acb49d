"""Extraction, generation and the new classification keys end to end, in every dialect: the
real flow, the real local server speaking the dialect, real files. Typed columns are
checked; invalid answers are retried and then kept ``invalid`` with the reason; a re-run
sends nothing."""

from __future__ import annotations

import json
import sqlite3

import jsonschema
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from flows.job import batch_job
from tablebatch.jobs.metrics import multilabel_metrics

PROVIDERS = ("seed", "xai", "openai", "anthropic")
TICKETS = (
    "id,text,gold_severity,gold_tags\n"
    't1,"I was charged twice on 2026-03-02. Please refund the extra $29.99, this is urgent.",'
    "high,billing\n"
    't2,"The export button does nothing since the update. No error, no file.",medium,bug\n'
    't3,"Could you add a dark mode? Not a refund request, just an idea.",low,feature\n'
    't4,"My login fails and I was billed for 12 seats on March 3, 2026.",medium,account|billing\n'
    't5,"Nothing works after the crash on 2026-01-31, and nobody answers.",high,bug\n'
)
SCHEMA = {
    "product": {"type": "string", "description": "what the ticket is about"},
    "severity": {"type": "enum", "values": ["low", "medium", "high"]},
    "refund_requested": {"type": "boolean"},
    "amount": {"type": "number", "required": False, "description": "the amount of money"},
    "order_date": {"type": "date", "required": False},
    "tags": {"type": "list", "items": "string"},
    "customer": {
        "type": "object",
        "fields": {"seats": {"type": "integer", "required": False}},
    },
}
TYPES = {
    "product": pa.string(),
    "severity": pa.string(),
    "refund_requested": pa.bool_(),
    "amount": pa.float64(),
    "order_date": pa.date32(),
    "tags": pa.list_(pa.string()),
    "customer": pa.struct([("seats", pa.int64())]),
    "parse_error": pa.string(),
}
LABELS = {
    "billing": "charges, invoices, refunds",
    "bug": "something does not work, an error, a crash",
    "feature": "a request for something new",
    "account": "login, password, access",
}


def _job(name: str, provider: str, kind: str, **extra: object) -> dict:
    return {
        "name": name,
        "kind": kind,
        "input": {"path": "data/tickets.csv", "id_column": "id"},
        "prompt": {"template": "Read the ticket.\n{schema}\n\n{text}"},
        "model": "grok-4",
        "api": {"provider": provider, "base_url": "local"},
        "batch": {"max_attempts": 3},
        "output": {"path": f"data/output/{name}.parquet"},
        **extra,
    }


def _extraction(name: str, provider: str, **extra: object) -> dict:
    return _job(
        name,
        provider,
        "extraction",
        output_schema=SCHEMA,
        gold_columns={"severity": "gold_severity"},
        **extra,
    )


def _bodies(root) -> list[dict]:
    with sqlite3.connect(root / ".tablebatch/server.db") as db:
        return [json.loads(b) for (b,) in db.execute("SELECT body FROM requests")]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_each_new_kind_in_every_dialect(project, tmp_path, provider) -> None:
    files = {
        "data/tickets.csv": TICKETS,
        "data/faq.csv": "id,english,french_ref\n"
        "f1,How do I reset my password?,Comment réinitialiser mon mot de passe ?\n"
        "f2,Refunds take five days.,Les remboursements prennent cinq jours.\n",
    }
    # extraction: typed columns, each answer valid JSON of the schema
    config = project(_extraction(f"ex-{provider}", provider), files)
    report = batch_job(str(config))
    out = pq.read_table(tmp_path / f"data/output/ex-{provider}.parquet")
    assert report["rows_by_status"] == {"completed": 5}
    assert {n: out.schema.field(n).type for n in TYPES} == TYPES
    fields = sorted(SCHEMA)  # in the config's order (the fixture's YAML sorts keys)
    assert out.column_names[-len(TYPES) :] == [*fields, "parse_error"]
    assert out.column("order_date").to_pylist()[0].isoformat() == "2026-03-02"
    assert out.column("amount").to_pylist()[0] == 29.99
    assert out.column("refund_requested").to_pylist()[:3] == [True, False, False]  # "Not a refund"
    assert out.column("customer").to_pylist()[3] == {"seats": 12}
    assert set(out.column("severity").to_pylist()) <= {"low", "medium", "high"}
    fields = report["extraction"]["fields"]
    assert fields["refund_requested"]["values"] == {"false": 4, "true": 1}
    assert report["extraction"]["gold"]["severity"]["scored"] == 5

    # multi-label classification with descriptions, an example, a rationale
    tags = _job(
        f"tags-{provider}",
        provider,
        "classification",
        prompt={"template": "Tag the ticket:\n{labels}\n\n{text}"},
        labels=LABELS,
        multi_label=True,
        rationale=True,
        examples=[{"input": {"text": "I was charged twice"}, "label": ["billing"]}],
        gold_column="gold_tags",
    )
    report = batch_job(str(project(tags, files)))
    out = pq.read_table(tmp_path / f"data/output/tags-{provider}.parquet")
    assert out.schema.field("labels").type == pa.list_(pa.string())
    assert out.schema.field("rationale").type == pa.string()
    predicted = out.column("labels").to_pylist()
    assert all(p and set(p) <= set(LABELS) for p in predicted)
    gold = [g.split("|") for g in out.column("gold_tags").to_pylist()]
    assert report["multi_label"] == {
        **multilabel_metrics(predicted, gold, list(LABELS)),
        "gold_column": "gold_tags",
        "rows_without_usable_gold": 0,
    }

    # generation with references, to CSV
    translate = {
        **_job(f"gen-{provider}", provider, "generation"),
        "input": {"path": "data/faq.csv", "id_column": "id"},
        "prompt": {"template": "Translate into French:\n\n{english}"},
        "output_column": "french",
        "reference_column": "french_ref",
        "output": {"path": f"data/output/gen-{provider}.csv"},
    }
    report = batch_job(str(project(translate, files)))
    out = pacsv.read_csv(tmp_path / f"data/output/gen-{provider}.csv")
    assert out.column("french").to_pylist()[0].startswith("How do I reset")  # a stand-in
    for name in ("chrf", "bleu", "rouge1", "rouge2", "rougeL"):  # numbers (CSV: as read back)
        assert pa.types.is_floating(out.schema.field(name).type) or out[name].to_pylist() == [0, 0]
    assert 0 < report["scores"]["chrf"] < 100

    # what the server was asked: structured output for the 10 requests of the first two jobs
    bodies = _bodies(tmp_path)
    schemas = [b["response_format"]["json_schema"] for b in bodies if "response_format" in b]
    assert len(bodies) == 12 and len(schemas) == 10 and all(s["strict"] for s in schemas)


def test_invalid_answers_are_retried_then_kept_invalid_with_the_reason(
    project, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("TABLEBATCH_SERVER_FAULTS__INVALID_JSON_RATE", "0.4")
    monkeypatch.setenv("TABLEBATCH_SERVER_FAULTS__SEED", "3")
    config = project(
        _extraction("ex-faulty", "seed", batch={"max_attempts": 8}), {"data/tickets.csv": TICKETS}
    )
    report = batch_job(str(config))
    out = pq.read_table(tmp_path / "data/output/ex-faulty.parquet")
    assert report["rows_by_status"] == {"completed": 5}
    assert max(out.column("attempts").to_pylist()) > 1  # some answers were bad, and sent again
    again = batch_job(str(config))
    assert again["requests"]["sent"] == 0  # a re-run pays for nothing

    monkeypatch.setenv("TABLEBATCH_SERVER_FAULTS__INVALID_JSON_RATE", "1")
    config = project(
        _extraction("ex-broken", "seed", batch={"max_attempts": 2}), {"data/tickets.csv": TICKETS}
    )
    report = batch_job(str(config))
    out = pq.read_table(tmp_path / "data/output/ex-broken.parquet")
    assert report["rows_by_status"] == {"invalid": 5}
    assert out.column("attempts").to_pylist() == [2] * 5
    errors = out.column("error").to_pylist()
    assert errors == out.column("parse_error").to_pylist()
    assert all(e.startswith("not valid JSON") or "is a required property" in e for e in errors), (
        errors
    )
    assert out.column("severity").null_count == 5
    assert report["extraction"]["validity_rate"] == 0.0
    requests = batch_job(str(config))["requests"]
    assert (requests["sent"], requests["found"]) == (0, 5)  # tried max_attempts times


def test_a_schema_file_and_csv_output(project, tmp_path) -> None:
    schema = {
        "type": "object",
        "properties": {
            "severity": {"type": "string", "enum": ["low", "medium", "high"]},
            "when": {"type": ["string", "null"], "format": "date"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["severity", "when", "tags"],
        "additionalProperties": False,
    }
    files = {"data/tickets.csv": TICKETS, "schemas/ticket.json": json.dumps(schema)}
    job = _job(
        "ex-file",
        "openai",
        "extraction",
        output_schema="schemas/ticket.json",
        output={"path": "data/output/ex-file.csv"},
    )
    report = batch_job(str(project(job, files)))
    assert report["rows_by_status"] == {"completed": 5}
    out = pacsv.read_csv(tmp_path / "data/output/ex-file.csv")
    tags = [json.loads(t) for t in out.column("tags").to_pylist()]  # lists as JSON text
    assert all(isinstance(t, list) and t for t in tags)
    rows = [
        {"severity": s, "when": w and w.isoformat(), "tags": t}
        for s, w, t in zip(
            out.column("severity").to_pylist(), out.column("when").to_pylist(), tags, strict=True
        )
    ]
    for row in rows:
        jsonschema.validate(row, schema)
    assert rows[0]["when"] == "2026-03-02" and rows[1]["when"] is None
    assert _bodies(tmp_path)[0]["response_format"]["json_schema"]["schema"] == schema


def test_single_label_with_a_rationale_and_examples(project, tmp_path) -> None:
    job = _job(
        "why",
        "xai",
        "classification",
        prompt={"template": "Which one?\n{labels}\n\n{text}"},
        labels=["billing", "bug", "feature", "account"],
        rationale=True,
        examples=[
            {"input": {"text": "Add dark mode"}, "label": "feature", "rationale": "a wish"},
        ],
    )
    report = batch_job(str(project(job, {"data/tickets.csv": TICKETS})))
    out = pq.read_table(tmp_path / "data/output/why.parquet")
    assert out.column_names[-2:] == ["label", "rationale"]
    assert set(out.column("label").to_pylist()) <= set(LABELS)
    assert all(r for r in out.column("rationale").to_pylist())
    assert sum(report["labels"].values()) == 5
    body = _bodies(tmp_path)[0]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][0]["content"] == (
        "Which one?\nbilling\nbug\nfeature\naccount\n\nAdd dark mode"
    )
    assert json.loads(body["messages"][1]["content"]) == {"rationale": "a wish", "label": "feature"}
    props = body["response_format"]["json_schema"]["schema"]["properties"]
    assert list(props) == ["rationale", "label"]
