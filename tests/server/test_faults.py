"""Fault injection: HTTP errors, latency, unknown outcomes, failing requests and batches."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.helpers import make_requests, new_batch, wait_for, walk


@pytest.mark.parametrize(
    ("setting", "status", "kind"),
    [
        ("rate_limit_rate", 429, "rate_limit_error"),
        ("server_error_rate", 500, "server_error"),
        ("unavailable_rate", 503, "overloaded_error"),
    ],
)
def test_http_faults_answer_before_any_effect(server_factory, setting, status, kind) -> None:
    server = server_factory(faults={setting: 1.0, "retry_after_s": 2})
    with httpx.Client(base_url=server.url) as http:
        for method, path in [("POST", "/batches"), ("GET", "/batches"), ("GET", "/batches/b")]:
            response = http.request(method, path, json={"name": "x"})
            assert response.status_code == status
            assert response.json()["error"]["type"] == kind
        if status == 429:
            assert response.headers["Retry-After"] == "2"
        assert httpx.get(server.base_url + "/health").status_code == 200
    assert server.app.state.store.list_batches(10, None, None, None)[0] == []


def test_http_faults_are_seeded(server_factory) -> None:
    def statuses() -> list[int]:
        server = server_factory(faults={"seed": 7, "rate_limit_rate": 0.3, "unavailable_rate": 0.2})
        with httpx.Client(base_url=server.url) as http:
            return [http.get("/batches").status_code for _ in range(40)]

    first, second = statuses(), statuses()
    assert first == second
    assert {200, 429, 503} == set(first)


def test_latency_is_added(server_factory) -> None:
    server = server_factory(faults={"latency_s": 0.2})
    start = time.monotonic()
    httpx.get(server.url + "/batches").raise_for_status()
    assert time.monotonic() - start >= 0.2


def test_post_commit_error_hides_the_outcome_and_a_keyed_retry_is_safe(server_factory) -> None:
    server = server_factory(faults={"post_commit_error_rate": 1.0})
    with httpx.Client(base_url=server.url) as http:
        for _ in range(3):
            response = http.post("/batches", json={"name": "x"}, headers={"Idempotency-Key": "a"})
            assert response.status_code == 500
            assert "after the call was processed" in response.json()["error"]["message"]
        assert len(http.get("/batches", params={"name": "x"}).json()["data"]) == 1
        for _ in range(3):
            assert http.post("/batches", json={"name": "y"}).status_code == 500
        # each of those took effect: without a key, a retry makes another batch
        assert len(http.get("/batches", params={"name": "y"}).json()["data"]) == 3


def test_failing_requests_fail_with_a_reason_and_may_pass_on_retry(server_factory) -> None:
    server = server_factory(faults={"request_failure_rate": 0.3, "seed": 1})
    with httpx.Client(base_url=server.url) as http:
        batch = new_batch(http, n=300)
        http.post(f"/batches/{batch['id']}/start").raise_for_status()
        done = wait_for(http, batch["id"])
        assert done["status"] == "completed"
        assert 45 <= done["failed_count"] <= 135
        results = walk(http, f"/batches/{batch['id']}/results", limit=1000)
        failed = [r for r in results if r["status"] == "failed"]
        assert len(failed) == done["failed_count"]
        assert {r["error"]["type"] for r in failed} == {"server_error"}
        assert all("injected" in r["error"]["message"] for r in failed)
        retry = new_batch(http, "retry")
        wanted = {r["custom_id"] for r in failed}
        again = [r for r in make_requests(300) if r["custom_id"] in wanted]
        http.post(f"/batches/{retry['id']}/requests", json={"requests": again}).raise_for_status()
        http.post(f"/batches/{retry['id']}/start").raise_for_status()
        second = wait_for(http, retry["id"])
        assert second["completed_count"] > 0


def test_a_failing_batch_keeps_what_was_answered(server_factory) -> None:
    server = server_factory(faults={"batch_failure_rate": 1.0, "batch_fail_after": 0.5})
    with httpx.Client(base_url=server.url) as http:
        batch = new_batch(http, n=100)
        http.post(f"/batches/{batch['id']}/start").raise_for_status()
        done = wait_for(http, batch["id"])
        results = walk(http, f"/batches/{batch['id']}/results", limit=1000)
    assert done["status"] == "failed"
    assert done["failed_at"] and done["completed_at"] is None
    assert done["error"]["type"] == "batch_failed"
    assert (done["completed_count"], done["failed_count"]) == (50, 50)
    assert len(results) == 100
    failed = [r for r in results if r["status"] == "failed"]
    assert {r["error"]["type"] for r in failed} == {"batch_failed"}


def test_a_dropped_connection_after_the_effect(server_factory) -> None:
    server = server_factory(faults={"disconnect_rate": 1.0})
    with httpx.Client(base_url=server.url) as http, pytest.raises(httpx.RemoteProtocolError):
        http.post("/batches", json={"name": "dropped"})
    assert [b.name for b in server.app.state.store.list_batches(10, None, None, None)[0]] == [
        "dropped"
    ]
