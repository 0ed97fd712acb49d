"""The offline backend honours ``response_format``: schema-valid JSON read off the prompt
(numbers, dates, booleans from cue words, enums and labels by overlap, strings by
extract), the same every time; the ``invalid_json_rate`` fault breaks a share of them;
its answers say it is a stand-in; the Batch API spec's own one-line example is read."""

from __future__ import annotations

import jsonschema
import orjson
import pytest

from tablebatch.jobs.structured import inline_schema
from tablebatch.server.backends.offline import STAND_IN, answer, answer_body

SCHEMA = inline_schema(
    {
        "product": {"type": "string"},
        "severity": {"type": "enum", "values": ["low", "medium", "high"]},
        "refund_requested": "boolean",
        "amount": {"type": "number", "required": False, "description": "money charged"},
        "order_date": {"type": "date", "required": False},
        "tags": {"type": "list", "items": "string"},
        "labels": {"type": "list", "items": {"type": "enum", "values": ["billing", "bug"]}},
    }
)


def _body(text: str, schema: dict = SCHEMA, system: str = "") -> bytes:
    messages = [{"role": "user", "content": text}]
    if system:
        messages.insert(0, {"role": "system", "content": system})
    wanted = {"type": "json_schema", "json_schema": {"name": "t", "schema": schema, "strict": True}}
    return orjson.dumps({"model": "m", "messages": messages, "response_format": wanted})


def _answer(body: bytes, **faults: object) -> tuple[dict, str]:
    response, _, _ = answer_body(body, **faults)
    return response, response["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    ("ticket", "expected"),
    [
        (
            "Product: Pro plan\nI was charged $29.99 twice on 2026-03-02, please refund it.",
            {"product": "Pro plan", "amount": 29.99, "order_date": "2026-03-02"},
        ),
        (
            "The app crashed on 3 March 2026 after an error. I do not want a refund.",
            {"refund_requested": False, "amount": None, "order_date": "2026-03-03"},
        ),
        ("Refund requested for order 12.", {"refund_requested": True, "amount": None}),
    ],
)
def test_json_of_the_schema_read_off_the_text(ticket: str, expected: dict) -> None:
    labels = "billing: charges, invoices, refunds\nbug: an error, a crash"
    response, content = _answer(_body(f"Extract the fields. Labels:\n{labels}\n\n{ticket}"))
    value = orjson.loads(content)
    jsonschema.validate(value, SCHEMA)
    assert {k: value[k] for k in expected} == expected
    assert response["metadata"] == {"backend": "offline", "stand_in": STAND_IN}
    assert _answer(_body(f"Extract the fields. Labels:\n{labels}\n\n{ticket}"))[1] == content


def test_labels_by_overlap_with_their_descriptions() -> None:
    labels = "billing: charges, invoices, refunds\nbug: an error, a crash"
    prompt = "Tag it:\n" + labels + "\n\n{}"
    tagged = [
        orjson.loads(_answer(_body(prompt.format(t)))[1])["labels"]
        for t in (
            "My invoice is wrong.",
            "It crashed with an error.",
            "Charged twice, then a crash",
        )
    ]
    assert tagged == [["billing"], ["bug"], ["billing", "bug"]]


def test_the_invalid_json_fault_breaks_a_share_of_answers() -> None:
    contents = [
        _answer(_body(f"Ticket {i}: charged twice."), invalid_json=0.5, salt=f"s{i}")[1]
        for i in range(200)
    ]
    broken = []
    for content in contents:
        try:
            jsonschema.validate(orjson.loads(content), SCHEMA)
        except (orjson.JSONDecodeError, jsonschema.ValidationError) as exc:
            broken.append(type(exc).__name__)
    assert 70 < len(broken) < 130  # about half
    assert {"JSONDecodeError", "ValidationError"} == set(broken)  # both kinds of invalid
    assert _answer(_body("x"), invalid_json=0.0, salt="s1")[1] == _answer(_body("x"))[1]


def test_the_batch_api_specs_own_example_is_read() -> None:
    ask = [{"role": "user", "content": "Classify: positive or negative? 'Terrible experience.'"}]
    assert answer(ask) == "negative"
    ask = [{"role": "user", "content": "Classify: positive or negative? 'Lovely, it works.'"}]
    assert answer(ask) == "positive"
