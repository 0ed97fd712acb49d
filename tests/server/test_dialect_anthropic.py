"""The Anthropic dialect (``/anthropic/v1/messages/batches``): the official ``anthropic``
SDK, pointed at the local server, creates a message batch, waits for it and reads its
``results()`` — proof that the server speaks Anthropic's Message Batches as Anthropic does.
Also Messages params mapping, custom_id rules, limits, auth and error shape, pagination,
cancel, and faults the SDK retries through."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import pytest

from tablebatch.server import RunningServer, ServerSettings, create_app, serve_app_in_thread
from tablebatch.server.dialects import sdk_base_url
from tests.helpers import StatusRecorder

KEY = "sk-ant-local-test-key"
SYSTEM = "Classify the review. Answer with one of: positive, negative."


def params(text: str, **over: Any) -> dict[str, Any]:
    """Messages params asking to classify ``text``."""
    return {
        "model": "claude-test",
        "max_tokens": 20,
        "system": SYSTEM,
        "messages": [{"role": "user", "content": text}],
        **over,
    }


def sdk(server_url: str, key: str = KEY, **options: Any) -> anthropic.Anthropic:
    """The official client, based at the server's Anthropic dialect."""
    return anthropic.Anthropic(
        base_url=sdk_base_url(server_url, "anthropic"), api_key=key, **options
    )


def wait(client: anthropic.Anthropic, batch_id: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        assert time.monotonic() < deadline, f"batch did not end: {batch}"
        time.sleep(0.02)


def results(client: anthropic.Anthropic, batch_id: str) -> dict[str, Any]:
    lines = list(client.messages.batches.results(batch_id))
    by_id = {line.custom_id: line.result for line in lines}
    assert len(by_id) == len(lines), "a custom_id appears twice"
    return by_id


@pytest.fixture
def server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    return server_factory(api_keys=[KEY])


@pytest.fixture
def client(server: RunningServer) -> Iterator[anthropic.Anthropic]:
    with sdk(server.base_url) as c:
        yield c


def test_the_sdk_creates_waits_and_reads_results(client: anthropic.Anthropic) -> None:
    requests = [
        {"custom_id": "love", "params": params("I love it, great quality.")},
        {"custom_id": "hate", "params": params("Terrible, it broke.")},
        {
            "custom_id": "blocks",
            "params": params(
                "",
                system=[{"type": "text", "text": SYSTEM}],
                messages=[{"role": "user", "content": [{"type": "text", "text": "Awful."}]}],
                temperature=0.0,
            ),
        },
        {
            "custom_id": "short",
            "params": {
                "model": "claude-test",
                "max_tokens": 3,
                "messages": [{"role": "user", "content": "Summarize: " + "Long words here. " * 50}],
            },
        },
        {"custom_id": "no-max-tokens", "params": {**params("x"), "max_tokens": None}},
        {"custom_id": "tools", "params": params("x", tools=[{"name": "t", "input_schema": {}}])},
    ]
    requests[4]["params"].pop("max_tokens")
    created = client.messages.batches.create(requests=requests)
    assert created.id.startswith("msgbatch_") and created.type == "message_batch"
    assert created.processing_status == "in_progress" and created.results_url is None
    assert created.request_counts.processing == 6 and created.request_counts.succeeded == 0
    assert (created.expires_at - created.created_at).total_seconds() == 24 * 3600

    batch = wait(client, created.id)
    counts = batch.request_counts
    assert (counts.processing, counts.succeeded, counts.errored, counts.canceled) == (0, 4, 2, 0)
    assert batch.ended_at and batch.results_url.endswith(f"/messages/batches/{batch.id}/results")
    got = results(client, batch.id)
    assert sorted(got) == sorted(r["custom_id"] for r in requests)
    answers = {cid: r.message.content[0].text for cid, r in got.items() if r.type == "succeeded"}
    assert answers["love"] == "positive" and answers["hate"] == answers["blocks"] == "negative"
    message = got["love"].message
    assert (message.type, message.role, message.model) == ("message", "assistant", "claude-test")
    assert message.id.startswith("msg_") and message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert got["short"].message.stop_reason == "max_tokens"
    assert got["short"].message.usage.output_tokens <= 3
    assert got["no-max-tokens"].type == "errored"
    error = got["no-max-tokens"].error
    assert error.type == "error" and error.error.type == "invalid_request_error"
    assert "max_tokens" in error.error.message
    assert "not supported by the local server" in got["tools"].error.error.message


def test_cancel_through_the_sdk(server_factory) -> None:
    server = server_factory(api_keys=[KEY], faults={"processing_delay_s": 30})
    with sdk(server.base_url) as client:
        batch = client.messages.batches.create(
            requests=[{"custom_id": f"r{i}", "params": params("fine")} for i in range(3)]
        )
        canceling = client.messages.batches.cancel(batch.id)
        assert canceling.processing_status in ("canceling", "ended")
        assert canceling.cancel_initiated_at is not None
        batch = wait(client, batch.id)
        assert batch.request_counts.canceled == 3 and batch.request_counts.succeeded == 0
        assert {r.type for r in results(client, batch.id).values()} == {"canceled"}
        with pytest.raises(anthropic.BadRequestError, match="already ended"):
            client.messages.batches.cancel(batch.id)


@pytest.mark.parametrize(
    ("custom_ids", "words"),
    [
        (["has space"], "String should match pattern"),
        (["x" * 65], "String should match pattern"),
        (["ends-in-newline\n"], "String should match pattern"),
        (["a", "b", "a"], "repeats requests.0"),
    ],
)
def test_custom_ids_must_be_valid_and_unique(client, custom_ids, words) -> None:
    requests = [{"custom_id": c, "params": params("x")} for c in custom_ids]
    with pytest.raises(anthropic.BadRequestError, match=words) as caught:
        client.messages.batches.create(requests=requests)
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert client.messages.batches.list().data == []


def test_limits_come_from_the_dialect(server_factory) -> None:
    server = server_factory(
        api_keys=[KEY], dialect_limits={"anthropic_max_requests": 2, "anthropic_max_bytes": 3000}
    )
    with sdk(server.base_url, max_retries=0) as client:
        two = [{"custom_id": f"r{i}", "params": params("x")} for i in range(2)]
        assert wait(client, client.messages.batches.create(requests=two).id).request_counts
        with pytest.raises(anthropic.BadRequestError, match="at most 2"):
            client.messages.batches.create(
                requests=[*two, {"custom_id": "r9", "params": params("x")}]
            )
        with pytest.raises(anthropic.APIStatusError) as caught:
            client.messages.batches.create(
                requests=[{"custom_id": "big", "params": params("x" * 4000)}]
            )
    assert caught.value.status_code == 413
    assert caught.value.body["error"]["type"] == "request_too_large"
    limits = ServerSettings().dialect_limits
    assert (limits.anthropic_max_requests, limits.anthropic_max_bytes) == (100_000, 256 * 2**20)


def test_auth_and_version_headers(raw_http: httpx.Client, server: RunningServer) -> None:
    url = sdk_base_url(server.base_url, "anthropic") + "/v1/messages/batches"
    version = {"anthropic-version": "2023-06-01"}
    for headers, status, words in [
        (version, 401, "x-api-key header is required"),
        ({**version, "x-api-key": "wrong"}, 401, "invalid x-api-key"),
        ({"x-api-key": KEY}, 400, "anthropic-version"),
    ]:
        response = raw_http.get(url, headers=headers)
        assert response.status_code == status
        body = response.json()
        assert body["type"] == "error" and words in body["error"]["message"]
        kind = "authentication_error" if status == 401 else "invalid_request_error"
        assert body["error"]["type"] == kind
        assert "wrong" not in response.text
    assert raw_http.get(url, headers={**version, "x-api-key": KEY}).status_code == 200
    bearer = raw_http.get(url, headers={**version, "Authorization": f"Bearer {KEY}"})
    assert bearer.status_code == 200
    with (
        sdk(server.base_url, key="wrong", max_retries=0) as wrong,
        pytest.raises(anthropic.AuthenticationError),
    ):
        wrong.messages.batches.list()


def test_pages_go_both_ways(client: anthropic.Anthropic) -> None:
    made = [
        client.messages.batches.create(requests=[{"custom_id": "r", "params": params("x")}]).id
        for _ in range(5)
    ]
    newest_first = made[::-1]
    page = client.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == newest_first[:2] and page.has_more
    assert (page.first_id, page.last_id) == (newest_first[0], newest_first[1])
    assert [b.id for b in client.messages.batches.list(limit=2)] == newest_first  # after_id
    back = client.messages.batches.list(limit=2, before_id=newest_first[3])
    assert [b.id for b in back.data] == newest_first[1:3] and back.has_more
    first = client.messages.batches.list(limit=2, before_id=newest_first[1])
    assert [b.id for b in first.data] == newest_first[:1] and not first.has_more
    with pytest.raises(anthropic.BadRequestError):
        client.messages.batches.list(before_id=made[0], after_id=made[1])


def test_results_wait_for_the_end(raw_http: httpx.Client, server_factory) -> None:
    server = server_factory(api_keys=[KEY], faults={"processing_delay_s": 30})
    with sdk(server.base_url) as client:
        batch = client.messages.batches.create(requests=[{"custom_id": "r", "params": params("x")}])
        url = (
            sdk_base_url(server.base_url, "anthropic") + f"/v1/messages/batches/{batch.id}/results"
        )
        early = raw_http.get(url, headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"})
    assert early.status_code == 400 and "has not ended yet" in early.json()["error"]["message"]


def test_many_results_stream_as_jsonl(client: anthropic.Anthropic) -> None:
    n = 1200  # more than one chunk of the store's walk
    batch = client.messages.batches.create(
        requests=[{"custom_id": f"r{i}", "params": params(f"Great item {i}")} for i in range(n)]
    )
    wait(client, batch.id, timeout=60)
    got = results(client, batch.id)
    assert len(got) == n and {r.type for r in got.values()} == {"succeeded"}


def test_the_sdk_retries_through_injected_faults(raw_http: httpx.Client) -> None:
    faults = {
        "seed": 5,
        "rate_limit_rate": 0.1,
        "server_error_rate": 0.05,
        "unavailable_rate": 0.1,
        "retry_after_s": 0.01,
    }
    app = StatusRecorder(create_app(ServerSettings(api_keys=[KEY], faults=faults)))
    with serve_app_in_thread(app) as root, sdk(root, max_retries=10) as client:
        batch = client.messages.batches.create(
            requests=[{"custom_id": f"r{i}", "params": params("Great.")} for i in range(10)]
        )
        batch = wait(client, batch.id)
        assert batch.request_counts.succeeded == 10
        assert sorted(results(client, batch.id)) == sorted(f"r{i}" for i in range(10))
        stored, _ = app.state.store.list_batches(10, None, None, None, dialect="anthropic")
        assert [b.id for b in stored] == [batch.id]  # retried creates made no second batch
        for _ in range(200):  # until each kind of fault has been met and retried through
            if {429, 500, 503} <= set(app.statuses("/anthropic/v1/")):
                break
            assert client.messages.batches.list().data[0].id == batch.id
        direct = [
            raw_http.get(
                sdk_base_url(root, "anthropic") + "/v1/messages/batches",
                headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
            )
            for _ in range(40)
        ]
    assert {429, 500, 503} <= set(app.statuses("/anthropic/v1/"))
    faulty = [r for r in direct if r.status_code != 200]
    assert faulty, "no fault in 40 calls"
    for response in faulty:  # injected faults speak the dialect too
        assert response.json()["type"] == "error"
        assert response.json()["error"]["type"] in (
            "rate_limit_error",
            "api_error",
            "overloaded_error",
        )


def test_an_anthropic_batch_is_not_an_openai_one(
    raw_http: httpx.Client, server: RunningServer
) -> None:
    with sdk(server.base_url) as client:
        batch = client.messages.batches.create(requests=[{"custom_id": "r", "params": params("x")}])
    openai_url = sdk_base_url(server.base_url, "openai") + f"/batches/{batch.id}"
    assert raw_http.get(openai_url, headers={"Authorization": f"Bearer {KEY}"}).status_code == 404


def test_a_batch_past_its_window_ends_with_expired_requests(server_factory) -> None:
    server = server_factory(
        api_keys=[KEY],
        dialect_limits={"batch_window_s": 0.4},
        faults={"processing_rate": 20},
    )
    with sdk(server.base_url) as client:
        batch = client.messages.batches.create(
            requests=[{"custom_id": f"r{i}", "params": params("Great.")} for i in range(30)]
        )
        batch = wait(client, batch.id)
        got = results(client, batch.id)
    counts = batch.request_counts
    assert counts.succeeded > 0 and counts.expired > 0 and counts.canceled == 0
    assert counts.succeeded + counts.expired == 30
    kinds = [r.type for r in got.values()]
    assert (kinds.count("succeeded"), kinds.count("expired")) == (counts.succeeded, counts.expired)
