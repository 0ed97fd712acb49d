"""The OpenAI dialect (``/openai/v1``): the official ``openai`` SDK, pointed at the local
server, uploads a JSONL file, creates a batch, waits for it and reads its output — proof
that the server speaks OpenAI's Batch API as OpenAI does. Also its checks of the input
file, its limits, its error shape, pagination, cancel and faults the SDK retries through."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from tablebatch.server import RunningServer, ServerSettings, create_app, serve_app_in_thread
from tablebatch.server.dialects import sdk_base_url
from tests.helpers import StatusRecorder, chat

KEY = "sk-local-test-key"
ENDPOINT = "/v1/chat/completions"
TERMINAL = ("completed", "failed", "cancelled", "expired")


def line(custom_id: str, text: str = "Is this review positive or negative? Great!", **over: Any):
    """One line of an input file: ``{custom_id, method, url, body}``."""
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": ENDPOINT,
        "body": chat(text, model="gpt-4o-mini"),
        **over,
    }


def jsonl(lines: list[Any]) -> bytes:
    return b"\n".join(orjson.dumps(x) if not isinstance(x, bytes) else x for x in lines) + b"\n"


def sdk(server: RunningServer, key: str = KEY, **options: Any) -> openai.OpenAI:
    """The official client, based at the server's OpenAI dialect."""
    return openai.OpenAI(base_url=sdk_base_url(server.base_url, "openai"), api_key=key, **options)


def upload(client: openai.OpenAI, lines: list[Any]) -> str:
    return client.files.create(file=("input.jsonl", io.BytesIO(jsonl(lines))), purpose="batch").id


def wait(client: openai.OpenAI, batch_id: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in TERMINAL:
            return batch
        assert time.monotonic() < deadline, f"batch did not end: {batch}"
        time.sleep(0.02)


def read_jsonl(client: openai.OpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    if file_id is None:
        return {}
    rows = [orjson.loads(x) for x in client.files.content(file_id).content.splitlines()]
    by_id = {row["custom_id"]: row for row in rows}
    assert len(by_id) == len(rows), "a custom_id appears twice"
    return by_id


@pytest.fixture
def server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    return server_factory(api_keys=[KEY])


@pytest.fixture
def client(server: RunningServer) -> Iterator[openai.OpenAI]:
    with sdk(server) as c:
        yield c


def test_the_sdk_uploads_creates_waits_and_reads_results(client: openai.OpenAI) -> None:
    lines = [line(f"row-{i}") for i in range(6)]
    lines.append(line("no-messages", body={"model": "gpt-4o-mini", "messages": []}))
    uploaded = client.files.retrieve(upload(client, lines))
    assert (uploaded.purpose, uploaded.bytes) == ("batch", len(jsonl(lines)))

    created = client.batches.create(
        input_file_id=uploaded.id,
        endpoint=ENDPOINT,
        completion_window="24h",
        metadata={"job": "reviews"},
    )
    assert created.status == "validating" and created.id.startswith("batch_")
    assert created.expires_at == created.created_at + 24 * 3600
    batch = wait(client, created.id)

    assert batch.status == "completed"
    assert (batch.request_counts.total, batch.request_counts.completed) == (7, 6)
    assert batch.request_counts.failed == 1
    assert batch.metadata == {"job": "reviews"} and batch.model == "gpt-4o-mini"
    assert batch.completed_at and batch.in_progress_at and batch.finalizing_at
    assert batch.usage.input_tokens > 0 and batch.usage.output_tokens > 0
    output = read_jsonl(client, batch.output_file_id)
    assert sorted(output) == [f"row-{i}" for i in range(6)]
    for row in output.values():
        assert row["id"].startswith("batch_req_") and row["error"] is None
        assert row["response"]["status_code"] == 200
        body = row["response"]["body"]
        assert body["object"] == "chat.completion" and body["model"] == "gpt-4o-mini"
        assert body["choices"][0]["message"]["content"] == "positive"
    errors = read_jsonl(client, batch.error_file_id)
    assert list(errors) == ["no-messages"]
    failed = errors["no-messages"]["response"]
    assert failed["status_code"] == 400
    assert "messages must be a non-empty list" in failed["body"]["error"]["message"]
    assert client.files.retrieve(batch.output_file_id).purpose == "batch_output"
    assert client.batches.retrieve(batch.id).output_file_id == batch.output_file_id  # written once


def test_cancel_through_the_sdk(server_factory) -> None:
    server = server_factory(api_keys=[KEY], faults={"processing_delay_s": 30})
    with sdk(server) as client:
        batch = client.batches.create(
            input_file_id=upload(client, [line(f"r{i}") for i in range(3)]),
            endpoint=ENDPOINT,
            completion_window="24h",
        )
        assert client.batches.retrieve(batch.id).status == "in_progress"
        cancelling = client.batches.cancel(batch.id)
        assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at
        batch = wait(client, batch.id)
        assert batch.status == "cancelled" and batch.cancelled_at
        assert batch.output_file_id is None
        errors = read_jsonl(client, batch.error_file_id)
        assert sorted(errors) == ["r0", "r1", "r2"]
        assert {e["error"]["code"] for e in errors.values()} == {"batch_cancelled"}
        with pytest.raises(openai.ConflictError, match="Cannot cancel a batch with status"):
            client.with_options(max_retries=0).batches.cancel(batch.id)  # the SDK retries 409s


@pytest.mark.parametrize(
    ("lines", "code", "at_line"),
    [
        ([line("a"), b"{not json"], "invalid_json_line", 2),
        ([line("a"), line("a")], "duplicate_custom_id", 2),
        ([line("a", url="/v1/embeddings")], "url_mismatch", 1),
        ([line("a", method="GET")], "invalid_value", 1),
        ([line("a"), line("b", body=chat("x", model="gpt-4o"))], "model_mismatch", 2),
        ([{"method": "POST", "url": ENDPOINT, "body": chat("x")}], "missing_required_parameter", 1),
        ([b"  ", b""], "empty_file", None),
    ],
)
def test_a_bad_input_file_fails_the_batch_with_errors(client, lines, code, at_line) -> None:
    created = client.batches.create(
        input_file_id=upload(client, lines), endpoint=ENDPOINT, completion_window="24h"
    )
    assert created.status == "validating"
    batch = wait(client, created.id)
    assert batch.status == "failed" and batch.failed_at
    assert batch.request_counts.total == 0 and batch.output_file_id is None
    assert batch.errors.object == "list"
    first = batch.errors.data[0]
    assert (first.code, first.line) == (code, at_line)
    assert first.message


def test_limits_come_from_the_dialect(server_factory) -> None:
    limits = {"openai_max_requests": 3, "openai_max_bytes": 2000}
    server = server_factory(api_keys=[KEY], dialect_limits=limits)
    with sdk(server) as client:
        too_many = client.batches.create(
            input_file_id=upload(client, [line(f"r{i}") for i in range(4)]),
            endpoint=ENDPOINT,
            completion_window="24h",
        )
        too_big = client.batches.create(
            input_file_id=upload(client, [line("r", text="x" * 3000)]),
            endpoint=ENDPOINT,
            completion_window="24h",
        )
        at_limit = client.batches.create(
            input_file_id=upload(client, [line(f"r{i}") for i in range(3)]),
            endpoint=ENDPOINT,
            completion_window="24h",
        )
        assert wait(client, too_many.id).errors.data[0].code == "too_many_tasks"
        assert "at most 3" in wait(client, too_many.id).errors.data[0].message
        assert wait(client, too_big.id).errors.data[0].code == "file_too_large"
        assert wait(client, at_limit.id).status == "completed"


def test_the_default_limits_are_openais() -> None:
    limits = ServerSettings().dialect_limits
    assert (limits.openai_max_requests, limits.openai_max_bytes) == (50_000, 200 * 2**20)


GOOD = {"input_file_id": "f", "endpoint": ENDPOINT, "completion_window": "24h"}


@pytest.mark.parametrize(
    ("change", "param", "words"),
    [
        ({"input_file_id": None}, "input_file_id", "Missing required"),
        ({"completion_window": "48h"}, "completion_window", "'24h'"),
        ({"endpoint": "/v1/embeddings"}, "endpoint", "chat completions"),
        ({"input_file_id": "file-nope"}, "input_file_id", "No such File"),
        ({"metadata": {str(i): "v" for i in range(17)}}, "metadata", "16 pairs"),
    ],
)
def test_create_refuses_a_bad_call_at_once(
    raw_http, server: RunningServer, change, param, words
) -> None:
    body = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    headers = {"Authorization": f"Bearer {KEY}"}
    url = sdk_base_url(server.base_url, "openai") + "/batches"
    response = raw_http.post(url, json=body, headers=headers)
    assert response.status_code in (400, 404)
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert words in error["message"]


def test_upload_checks_its_parts(raw_http: httpx.Client, server: RunningServer) -> None:
    url = sdk_base_url(server.base_url, "openai") + "/files"
    headers = {"Authorization": f"Bearer {KEY}"}
    no_purpose = raw_http.post(url, files={"file": ("a.jsonl", b"{}")}, headers=headers)
    assert no_purpose.status_code == 400 and no_purpose.json()["error"]["param"] == "purpose"
    wrong = raw_http.post(
        url, files={"file": ("a.jsonl", b"{}")}, data={"purpose": "fine-tune"}, headers=headers
    )
    assert wrong.status_code == 400 and "purpose 'batch'" in wrong.json()["error"]["message"]
    no_file = raw_http.post(url, data={"purpose": "batch"}, headers=headers)
    assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"
    missing = raw_http.get(url + "/file-nope", headers=headers)
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "id"


def test_auth_errors_are_in_openais_shape(raw_http: httpx.Client, server: RunningServer) -> None:
    with (
        sdk(server, key="sk-wrong", max_retries=0) as wrong,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        wrong.batches.list()
    assert caught.value.status_code == 401
    assert caught.value.body["code"] == "invalid_api_key"
    assert "sk-wrong" not in str(caught.value.body)
    bare = raw_http.get(sdk_base_url(server.base_url, "openai") + "/batches")
    assert bare.status_code == 401
    assert "Authorization: Bearer" in bare.json()["error"]["message"]
    assert bare.json()["error"]["type"] == "invalid_request_error"


def test_the_sdk_pages_through_batches(client: openai.OpenAI) -> None:
    file_id = upload(client, [line("r")])
    made = [
        client.batches.create(input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h").id
        for _ in range(5)
    ]
    first = client.batches.list(limit=2)
    assert [b.id for b in first.data] == made[::-1][:2] and first.has_more
    assert [b.id for b in client.batches.list(limit=2)] == made[::-1]  # auto-paging, after=
    tail = client.batches.list(limit=2, after=made[1])
    assert [b.id for b in tail.data] == [made[0]] and not tail.has_more
    with pytest.raises(openai.BadRequestError):
        client.batches.list(limit=0)


def test_the_sdk_retries_through_injected_faults(raw_http: httpx.Client) -> None:
    faults = {"seed": 3, "rate_limit_rate": 0.25, "server_error_rate": 0.15, "retry_after_s": 0.01}
    app = StatusRecorder(create_app(ServerSettings(api_keys=[KEY], faults=faults)))
    with (
        serve_app_in_thread(app) as root,
        openai.OpenAI(base_url=sdk_base_url(root, "openai"), api_key=KEY, max_retries=8) as c,
    ):
        batch = c.batches.create(
            input_file_id=upload(c, [line(f"r{i}") for i in range(20)]),
            endpoint=ENDPOINT,
            completion_window="24h",
        )
        batch = wait(c, batch.id)
        assert batch.status == "completed"
        assert sorted(read_jsonl(c, batch.output_file_id)) == sorted(f"r{i}" for i in range(20))
        stored, _ = app.state.store.list_batches(10, None, None, None, dialect="openai")
        assert [b.id for b in stored] == [batch.id]  # retried creates made no second batch
        headers = {"Authorization": f"Bearer {KEY}"}
        url = sdk_base_url(root, "openai") + "/batches"
        direct = [raw_http.get(url, headers=headers) for _ in range(40)]
    seen = app.statuses("/openai/v1/")
    assert 429 in seen and 500 in seen
    faulty = [r.json()["error"] for r in direct if r.status_code != 200]
    assert faulty, "no fault in 40 calls"
    for error in faulty:  # injected faults speak the dialect too
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] in ("requests", "server_error")


def test_batches_of_one_dialect_are_invisible_to_another(
    raw_http: httpx.Client, server: RunningServer
) -> None:
    with sdk(server) as client:
        batch = client.batches.create(
            input_file_id=upload(client, [line("r")]), endpoint=ENDPOINT, completion_window="24h"
        )
    headers = {"Authorization": f"Bearer {KEY}"}
    seed = raw_http.get(f"{server.url}/batches/{batch.id}", headers=headers)
    assert seed.status_code == 404 and seed.json()["error"]["type"] == "not_found_error"
    assert raw_http.get(server.url + "/batches", headers=headers).json()["data"] == []
    route = raw_http.get(server.base_url + "/openai/v1/nothing", headers=headers)
    assert route.status_code == 404 and set(route.json()["error"]) == {
        "message",
        "type",
        "param",
        "code",
    }


def test_an_idempotency_key_makes_create_safe_to_retry(client: openai.OpenAI) -> None:
    file_id = upload(client, [line("r")])
    args = {"input_file_id": file_id, "endpoint": ENDPOINT, "completion_window": "24h"}
    first = client.batches.create(**args, extra_headers={"Idempotency-Key": "k1"})
    again = client.batches.create(**args, extra_headers={"Idempotency-Key": "k1"})
    assert first.id == again.id
    assert len(client.batches.list().data) == 1


def test_a_batch_past_its_window_expires_and_keeps_its_results(server_factory) -> None:
    server = server_factory(
        api_keys=[KEY],
        dialect_limits={"batch_window_s": 0.4},
        faults={"processing_rate": 20},
    )
    with sdk(server) as client:
        batch = client.batches.create(
            input_file_id=upload(client, [line(f"r{i}") for i in range(30)]),
            endpoint=ENDPOINT,
            completion_window="24h",
        )
        assert batch.expires_at - batch.created_at <= 1
        batch = wait(client, batch.id)
        assert batch.status == "expired" and batch.expired_at
        done = read_jsonl(client, batch.output_file_id)
        expired = read_jsonl(client, batch.error_file_id)
    assert done and expired and sorted([*done, *expired]) == sorted(f"r{i}" for i in range(30))
    assert batch.request_counts.completed == len(done)
    assert {e["error"]["code"] for e in expired.values()} == {"batch_expired"}
    assert all(e["response"] is None for e in expired.values())
