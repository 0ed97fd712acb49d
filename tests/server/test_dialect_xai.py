"""The xAI dialect (``/xai/v1``), through httpx (xAI's SDK speaks gRPC, not REST): create a
batch, add requests (processing starts), wait for ``num_pending == 0``, page through results
and request metadata with ``pagination_token``, cancel with ``POST /v1/batches/{id}:cancel``;
its checks, limits, error shape, and faults retried through with the project's retry policy."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tablebatch.api.retry import RetryPolicy, parse_retry_after
from tablebatch.server import RunningServer, ServerSettings, create_app, serve_app_in_thread
from tablebatch.server.dialects import sdk_base_url
from tests.helpers import StatusRecorder, chat

KEY = "xai-local-test-key"
INVALID = "Client specified an invalid argument"


def item(rid: str | None, text: str = "Is this review positive or negative? Great!") -> dict:
    """One batch request: ``{batch_request_id, batch_request: {chat_get_completion}}``."""
    request: dict[str, Any] = {"batch_request": {"chat_get_completion": chat(text)}}
    if rid is not None:
        request["batch_request_id"] = rid
    return request


def add(http: httpx.Client, batch_id: str, items: list[dict]) -> httpx.Response:
    return http.post(f"/batches/{batch_id}/requests", json={"batch_requests": items})


def wait(http: httpx.Client, batch_id: str, timeout: float = 20.0) -> dict[str, Any]:
    """Poll until ``state.num_pending`` is 0: xAI's batches have no status string."""
    deadline = time.monotonic() + timeout
    while True:
        batch = http.get(f"/batches/{batch_id}").raise_for_status().json()
        if batch["state"]["num_pending"] == 0:
            return batch
        assert time.monotonic() < deadline, f"batch did not end: {batch}"
        time.sleep(0.02)


def walk(http: httpx.Client, path: str, key: str, limit: int) -> list[dict[str, Any]]:
    """Every item of a list, following ``pagination_token`` until a page has none."""
    items: list[dict[str, Any]] = []
    token = None
    while True:
        params = {"limit": limit, **({"pagination_token": token} if token else {})}
        page = http.get(path, params=params).raise_for_status().json()
        assert len(page[key]) <= limit
        items += page[key]
        token = page.get("pagination_token")
        if not token:
            return items


@pytest.fixture
def server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    return server_factory(api_keys=[KEY])


@pytest.fixture
def http(server: RunningServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=sdk_base_url(server.base_url, "xai"), headers=headers) as client:
        yield client


def test_create_add_wait_and_page_through_results(http: httpx.Client) -> None:
    batch = http.post("/batches", json={"name": "reviews"}).raise_for_status().json()
    assert batch["batch_id"].startswith("batch_") and batch["name"] == "reviews"
    assert batch["state"] == {
        "num_requests": 0,
        "num_pending": 0,
        "num_success": 0,
        "num_error": 0,
        "num_cancelled": 0,
    }
    assert "status" not in batch and "cancel_time" not in batch
    assert batch["create_time"].endswith("Z") and batch["expire_time"] > batch["create_time"]
    batch_id = batch["batch_id"]

    first = add(http, batch_id, [item(f"r{i}") for i in range(4)])
    assert first.status_code == 200 and first.json() == {}
    assert add(http, batch_id, [item(f"r{i}") for i in range(4, 7)]).status_code == 200
    done = wait(http, batch_id)
    assert done["state"]["num_requests"] == 7 and done["state"]["num_success"] == 7

    results = walk(http, f"/batches/{batch_id}/results", "results", limit=3)
    assert sorted(r["batch_request_id"] for r in results) == [f"r{i}" for i in range(7)]
    for result in results:
        completion = result["batch_result"]["response"]["chat_get_completion"]
        assert completion["object"] == "chat.completion"
        assert completion["choices"][0]["message"]["content"] == "positive"
    metadata = walk(http, f"/batches/{batch_id}/requests", "batch_request_metadata", limit=4)
    assert [m["batch_request_id"] for m in metadata] == [f"r{i}" for i in range(7)]
    assert {(m["state"], m["model"], m["endpoint"]) for m in metadata} == {
        ("STATE_SUCCEEDED", "grok-4", "/v1/chat/completions")
    }


def test_requests_added_after_the_end_are_processed_too(http: httpx.Client) -> None:
    batch_id = http.post("/batches", json={"name": "grows"}).json()["batch_id"]
    add(http, batch_id, [item("a")]).raise_for_status()
    assert wait(http, batch_id)["state"]["num_success"] == 1
    add(http, batch_id, [item("b"), item(None)]).raise_for_status()  # an id is optional
    done = wait(http, batch_id)
    assert (done["state"]["num_requests"], done["state"]["num_success"]) == (3, 3)
    ids = [r["batch_request_id"] for r in walk(http, f"/batches/{batch_id}/results", "results", 10)]
    assert ids[:2] == ["a", "b"] and uuid.UUID(ids[2])


def test_a_failed_request_carries_a_status_error(server_factory) -> None:
    server = server_factory(api_keys=[KEY], models=["grok-4"])
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=sdk_base_url(server.base_url, "xai"), headers=headers) as http:
        batch_id = http.post("/batches", json={"name": "models"}).json()["batch_id"]
        other = {**item("other"), "batch_request": {"chat_get_completion": chat("x", "grok-9")}}
        add(http, batch_id, [item("ok"), other]).raise_for_status()
        state = wait(http, batch_id)["state"]
        assert (state["num_success"], state["num_error"]) == (1, 1)
        pages = walk(http, f"/batches/{batch_id}/results", "results", 10)
        results = {r["batch_request_id"]: r["batch_result"] for r in pages}
        assert results["other"]["error"]["code"] == 5  # NOT_FOUND
        assert "grok-9" in results["other"]["error"]["message"]
        assert "response" not in results["other"]


@pytest.mark.parametrize(
    ("items", "words"),
    [
        ([{"batch_request_id": "a"}], "batch_request must hold one request"),
        ([{"batch_request_id": "a", "batch_request": {"image_request": {}}}], "not supported"),
        ([{**item("a"), "batch_request": {"chat_get_completion": {"model": "m"}}}], "messages"),
        ([item("a"), item("a")], "repeats an earlier one"),
        ([{**item("a"), "extra": 1}], "unknown field 'extra'"),
        ([], "Send"),
    ],
)
def test_bad_requests_are_refused_whole(http: httpx.Client, items, words) -> None:
    batch_id = http.post("/batches", json={"name": "bad"}).json()["batch_id"]
    response = add(http, batch_id, [*items, item("good")] if items else [])
    assert response.status_code == 400
    assert response.json()["code"] == INVALID and words in response.json()["error"]
    assert http.get(f"/batches/{batch_id}").json()["state"]["num_requests"] == 0


def test_an_id_already_in_the_batch_is_refused(http: httpx.Client) -> None:
    batch_id = http.post("/batches", json={"name": "dup"}).json()["batch_id"]
    add(http, batch_id, [item("a")]).raise_for_status()
    again = add(http, batch_id, [item("b"), item("a")])
    assert again.status_code == 409
    assert again.json()["code"] == "Some entity that we attempted to create already exists"
    assert "'a'" in again.json()["error"]
    assert http.get(f"/batches/{batch_id}").json()["state"]["num_requests"] == 1


def test_cancel_with_the_colon_path(server_factory) -> None:
    server = server_factory(api_keys=[KEY], faults={"processing_delay_s": 30})
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=sdk_base_url(server.base_url, "xai"), headers=headers) as http:
        batch_id = http.post("/batches", json={"name": "stop"}).json()["batch_id"]
        add(http, batch_id, [item(f"r{i}") for i in range(3)]).raise_for_status()
        assert http.get(f"/batches/{batch_id}:cancel").status_code == 405  # a POST only
        cancelled = http.post(f"/batches/{batch_id}:cancel")
        assert cancelled.status_code == 200 and cancelled.json()["cancel_time"]
        state = wait(http, batch_id)["state"]
        assert (state["num_cancelled"], state["num_success"]) == (3, 0)
        metadata = http.get(f"/batches/{batch_id}/requests").json()["batch_request_metadata"]
        assert {m["state"] for m in metadata} == {"STATE_CANCELLED"}
        assert http.get(f"/batches/{batch_id}/results").json() == {"results": []}
        late = add(http, batch_id, [item("late")])
        assert late.status_code == 400
        assert late.json()["code"].startswith("The system is not in a state")
        assert http.post(f"/batches/{batch_id}:cancel").json()["state"] == state  # as it is


def test_auth_errors_are_in_xais_shape(raw_http: httpx.Client, server: RunningServer) -> None:
    url = sdk_base_url(server.base_url, "xai") + "/batches"
    missing = raw_http.get(url)
    assert missing.status_code == 401 and "Authorization: Bearer" in missing.json()["error"]
    assert set(missing.json()) == {"code", "error"}
    wrong = raw_http.get(url, headers={"Authorization": "Bearer xai-wrong"})
    assert wrong.status_code == 400 and wrong.json()["code"] == INVALID  # as xAI answers
    assert "Incorrect API key" in wrong.json()["error"] and "xai-wrong" not in wrong.text


def test_batches_page_with_tokens(http: httpx.Client) -> None:
    made = [http.post("/batches", json={"name": f"b{i}"}).json()["batch_id"] for i in range(5)]
    page = http.get("/batches", params={"limit": 2}).json()
    assert [b["batch_id"] for b in page["batches"]] == made[::-1][:2] and page["pagination_token"]
    assert [b["batch_id"] for b in walk(http, "/batches", "batches", 2)] == made[::-1]
    last = http.get("/batches", params={"limit": 5}).json()
    assert "pagination_token" not in last  # the last page has none
    bad = http.get("/batches", params={"pagination_token": "%%%"})
    assert bad.status_code == 400 and "pagination_token" in bad.json()["error"]
    assert http.get("/batches", params={"limit": 0}).json()["code"] == INVALID


def test_create_needs_a_name(http: httpx.Client) -> None:
    for body, words in [({}, "name"), ({"name": "x", "model": "m"}, "Unknown field 'model'")]:
        response = http.post("/batches", json=body)
        assert response.status_code == 400 and words in response.json()["error"]


def test_the_add_call_limit_comes_from_the_dialect(server_factory) -> None:
    server = server_factory(api_keys=[KEY], dialect_limits={"xai_max_bytes_per_call": 1000})
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=sdk_base_url(server.base_url, "xai"), headers=headers) as http:
        batch_id = http.post("/batches", json={"name": "big"}).json()["batch_id"]
        response = add(http, batch_id, [item(f"r{i}") for i in range(20)])
    assert response.status_code == 413
    assert response.json()["code"] == "Some resource has been exhausted"
    assert ServerSettings().dialect_limits.xai_max_bytes_per_call == 25 * 2**20


def _call(http: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """A call retried by the project's retry policy (fast delays)."""
    policy = RetryPolicy(max_retries=12, initial_delay=0.01, max_delay=0.05)
    for attempt in range(policy.max_retries + 1):
        response = http.request(method, path, **kwargs)
        if not policy.retryable_status(response.status_code) or attempt == policy.max_retries:
            return response
        time.sleep(policy.delay(attempt + 1, parse_retry_after(response.headers, time.time())))
    raise AssertionError("unreachable")


def test_faults_are_retried_through_and_keyed_adds_happen_once() -> None:
    faults = {
        "seed": 11,
        "rate_limit_rate": 0.15,
        "server_error_rate": 0.1,
        "post_commit_error_rate": 0.4,
        "retry_after_s": 0.01,
    }
    app = StatusRecorder(create_app(ServerSettings(api_keys=[KEY], faults=faults)))
    headers = {"Authorization": f"Bearer {KEY}"}
    with (
        serve_app_in_thread(app) as root,
        httpx.Client(base_url=sdk_base_url(root, "xai"), headers=headers) as http,
    ):
        key = {"Idempotency-Key": "create"}
        created = _call(http, "POST", "/batches", json={"name": "faulty"}, headers=key)
        batch_id = created.raise_for_status().json()["batch_id"]
        for n in range(4):
            chunk = {"batch_requests": [item(f"c{n}-{i}") for i in range(5)]}
            key = {"Idempotency-Key": f"add-{n}"}
            path = f"/batches/{batch_id}/requests"
            _call(http, "POST", path, json=chunk, headers=key).raise_for_status()
        deadline = time.monotonic() + 20
        while True:
            batch = _call(http, "GET", f"/batches/{batch_id}").raise_for_status().json()
            if batch["state"]["num_pending"] == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert batch["state"]["num_requests"] == 20 and batch["state"]["num_success"] == 20
        listed = _call(http, "GET", "/batches").raise_for_status().json()["batches"]
        assert [b["batch_id"] for b in listed] == [batch_id]  # one batch, despite 500s after
    seen = app.statuses("/xai/v1/")
    assert {429, 500} <= set(seen)
    assert any(method == "POST" and status == 500 for method, _, status in app.seen)


def test_a_batch_past_its_expire_time_stops_taking_and_processing(server_factory) -> None:
    server = server_factory(
        api_keys=[KEY], dialect_limits={"batch_window_s": 0.4}, faults={"processing_rate": 20}
    )
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=sdk_base_url(server.base_url, "xai"), headers=headers) as http:
        batch_id = http.post("/batches", json={"name": "slow"}).json()["batch_id"]
        add(http, batch_id, [item(f"r{i}") for i in range(30)]).raise_for_status()
        state = wait(http, batch_id)["state"]
        assert state["num_success"] > 0 and state["num_cancelled"] > 0
        assert state["num_success"] + state["num_cancelled"] == 30
        late = add(http, batch_id, [item("late")])
    assert late.status_code == 400 and "expired" in late.json()["error"]
