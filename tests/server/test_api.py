"""Every endpoint of the spec, its shapes, and the status transitions."""

from __future__ import annotations

import re

import httpx

from tests.helpers import chat, make_requests, new_batch, wait_for

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def test_create_batch_has_the_spec_shape(client: httpx.Client) -> None:
    response = client.post(
        "/batches",
        json={
            "name": "my-batch",
            "description": "Batch of classification requests",
            "model": "grok-4",
            "endpoint": "/v1/chat/completions",
        },
    )
    assert response.status_code == 200
    batch = response.json()
    assert batch["id"].startswith("batch_")
    assert batch["object"] == "batch"
    assert batch["name"] == "my-batch"
    assert batch["description"] == "Batch of classification requests"
    assert batch["status"] == "created"
    assert RFC3339.match(batch["created_at"])
    assert (batch["request_count"], batch["completed_count"], batch["failed_count"]) == (0, 0, 0)
    assert batch["started_at"] is None and batch["completed_at"] is None


def test_get_and_list_batches(client: httpx.Client) -> None:
    batch = new_batch(client, "one")
    got = client.get(f"/batches/{batch['id']}").json()
    assert got == batch
    listed = client.get("/batches").json()
    assert listed["object"] == "list" and listed["has_more"] is False
    assert [b["id"] for b in listed["data"]] == [batch["id"]]


def test_unknown_batch_is_404_on_every_endpoint(client: httpx.Client) -> None:
    for method, path in [
        ("GET", "/batches/batch_nope"),
        ("GET", "/batches/batch_nope/requests"),
        ("GET", "/batches/batch_nope/results"),
        ("POST", "/batches/batch_nope/start"),
        ("POST", "/batches/batch_nope/cancel"),
    ]:
        response = client.request(method, path)
        assert response.status_code == 404, path
        assert response.json()["error"]["type"] == "not_found_error"
        assert "batch_nope" in response.json()["error"]["message"]
    response = client.post("/batches/batch_nope/requests", json={"requests": make_requests(1)})
    assert response.status_code == 404


def test_a_batch_goes_through(client: httpx.Client) -> None:
    batch = new_batch(client)
    added = client.post(f"/batches/{batch['id']}/requests", json={"requests": make_requests(3)})
    assert added.status_code == 200
    assert added.json()["status"] == "pending"
    assert added.json()["request_count"] == 3
    more = client.post(
        f"/batches/{batch['id']}/requests", json={"requests": make_requests(2, start=3)}
    )
    assert more.json()["request_count"] == 5

    requests = client.get(f"/batches/{batch['id']}/requests").json()
    assert [r["custom_id"] for r in requests["data"]] == [f"r-{i}" for i in range(5)]
    assert all(r["status"] == "pending" and r["id"].startswith("req_") for r in requests["data"])

    started = client.post(f"/batches/{batch['id']}/start").json()
    assert started["status"] == "processing"
    assert RFC3339.match(started["started_at"])

    done = wait_for(client, batch["id"])
    assert done["status"] == "completed"
    assert (done["request_count"], done["completed_count"], done["failed_count"]) == (5, 5, 0)
    assert RFC3339.match(done["completed_at"])
    assert done["usage"]["total_tokens"] > 0

    results = client.get(f"/batches/{batch['id']}/results").json()
    assert results["object"] == "list" and results["has_more"] is False
    assert sorted(r["custom_id"] for r in results["data"]) == [f"r-{i}" for i in range(5)]
    ids = {r["custom_id"]: r["id"] for r in requests["data"]}
    for result in results["data"]:
        assert result["id"] == ids[result["custom_id"]]
        assert result["status"] == "completed"
        response = result["response"]
        assert response["object"] == "chat.completion"
        assert response["model"] == "grok-4"
        assert isinstance(response["created"], int)
        (choice,) = response["choices"]
        assert choice["message"]["role"] == "assistant"
        assert choice["message"]["content"] == "positive"
        assert choice["finish_reason"] == "stop"
        usage = response["usage"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert done["usage"]["total_tokens"] == sum(
        r["response"]["usage"]["total_tokens"] for r in results["data"]
    )
    statuses = client.get(f"/batches/{batch['id']}/requests", params={"status": "completed"})
    assert len(statuses.json()["data"]) == 5


def test_filters_by_status(client: httpx.Client) -> None:
    created = new_batch(client, "a")
    pending = new_batch(client, "b", n=2)
    only = client.get("/batches", params={"status": "pending"}).json()["data"]
    assert [b["id"] for b in only] == [pending["id"]]
    only = client.get("/batches", params={"status": "created"}).json()["data"]
    assert [b["id"] for b in only] == [created["id"]]
    bad = client.get("/batches", params={"status": "done"})
    assert bad.status_code == 422
    assert "status" in bad.json()["error"]["message"]
    bad = client.get(f"/batches/{pending['id']}/requests", params={"status": "processing"})
    assert bad.status_code == 422


def test_list_by_name(client: httpx.Client) -> None:
    new_batch(client, "job-a")
    b = new_batch(client, "job-b")
    found = client.get("/batches", params={"name": "job-b"}).json()["data"]
    assert [x["id"] for x in found] == [b["id"]]


# -- transitions -------------------------------------------------------------------


def _conflict(response: httpx.Response, *words: str) -> None:
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["type"] == "conflict_error"
    for word in words:
        assert word in error["message"]


def test_starting_an_empty_batch_is_a_conflict(client: httpx.Client) -> None:
    batch = new_batch(client)
    _conflict(client.post(f"/batches/{batch['id']}/start"), "no requests")


def test_adding_to_a_processing_or_finished_batch_is_a_conflict(server_factory) -> None:
    server = server_factory(faults={"processing_delay_s": 30})
    with httpx.Client(base_url=server.url) as http:
        batch = new_batch(http, n=2)
        http.post(f"/batches/{batch['id']}/start").raise_for_status()
        more = {"requests": make_requests(1, start=9)}
        _conflict(http.post(f"/batches/{batch['id']}/requests", json=more), "processing")
        _conflict(http.post(f"/batches/{batch['id']}/start"), "processing")
        assert http.get(f"/batches/{batch['id']}").json()["request_count"] == 2


def test_finished_batch_refuses_everything(client: httpx.Client) -> None:
    batch = new_batch(client, n=2)
    client.post(f"/batches/{batch['id']}/start").raise_for_status()
    wait_for(client, batch["id"])
    _conflict(
        client.post(f"/batches/{batch['id']}/requests", json={"requests": make_requests(1, "x")}),
        "completed",
    )
    _conflict(client.post(f"/batches/{batch['id']}/start"), "completed")
    _conflict(client.post(f"/batches/{batch['id']}/cancel"), "already completed")


def test_cancel_a_created_or_pending_batch(client: httpx.Client) -> None:
    for n in (0, 3):
        batch = new_batch(client, n=n)
        cancelling = client.post(f"/batches/{batch['id']}/cancel")
        assert cancelling.status_code == 200
        assert cancelling.json()["status"] in ("cancelling", "cancelled")
        done = wait_for(client, batch["id"])
        assert done["status"] == "cancelled"
        assert done["cancelled_count"] == n
        assert RFC3339.match(done["cancelled_at"])
        _conflict(client.post(f"/batches/{batch['id']}/start"), "cancelled")
        _conflict(client.post(f"/batches/{batch['id']}/cancel"), "already cancelled")
        _conflict(
            client.post(
                f"/batches/{batch['id']}/requests", json={"requests": make_requests(1, "z")}
            ),
            "cancelled",
        )
        requests = client.get(f"/batches/{batch['id']}/requests").json()["data"]
        assert all(r["status"] == "cancelled" for r in requests)


def test_cancel_a_processing_batch_keeps_what_was_answered(server_factory) -> None:
    server = server_factory(faults={"processing_rate": 200})
    with httpx.Client(base_url=server.url) as http:
        batch = new_batch(http, n=200)
        http.post(f"/batches/{batch['id']}/start").raise_for_status()
        wait_for(http, batch["id"], lambda b: b["completed_count"] >= 20)
        cancelling = http.post(f"/batches/{batch['id']}/cancel")
        assert cancelling.json()["status"] == "cancelling"
        again = http.post(f"/batches/{batch['id']}/cancel")  # cancelling twice is harmless
        assert again.status_code == 200
        done = wait_for(http, batch["id"])
        assert done["status"] == "cancelled"
        assert 20 <= done["completed_count"] < 200
        assert done["completed_count"] + done["cancelled_count"] == 200
        results = http.get(f"/batches/{batch['id']}/results", params={"limit": 1000}).json()
        assert len(results["data"]) == done["completed_count"]
        cancelled = http.get(
            f"/batches/{batch['id']}/requests", params={"status": "cancelled", "limit": 1000}
        ).json()["data"]
        assert len(cancelled) == done["cancelled_count"]
        answered = {r["custom_id"] for r in results["data"]}
        assert answered.isdisjoint(r["custom_id"] for r in cancelled)


def test_processing_is_visible_to_polls(server_factory) -> None:
    server = server_factory(faults={"processing_delay_s": 0.3})
    with httpx.Client(base_url=server.url) as http:
        batch = new_batch(http, n=1)
        http.post(f"/batches/{batch['id']}/start").raise_for_status()
        assert http.get(f"/batches/{batch['id']}").json()["status"] == "processing"
        assert wait_for(http, batch["id"])["status"] == "completed"


def test_unknown_model_fails_the_request_or_the_create(server_factory) -> None:
    server = server_factory(models=["grok-4"])
    with httpx.Client(base_url=server.url) as http:
        bad = http.post("/batches", json={"name": "x", "model": "grok-9"})
        assert bad.status_code == 400
        assert "grok-9" in bad.json()["error"]["message"]
        batch = new_batch(http)
        body = {
            "requests": [
                {"custom_id": "ok", "body": chat("hello")},
                {"custom_id": "bad", "body": chat("hello", model="grok-9")},
            ]
        }
        http.post(f"/batches/{batch['id']}/requests", json=body).raise_for_status()
        http.post(f"/batches/{batch['id']}/start").raise_for_status()
        done = wait_for(http, batch["id"])
        assert (done["completed_count"], done["failed_count"]) == (1, 1)
        results = {
            r["custom_id"]: r for r in http.get(f"/batches/{batch['id']}/results").json()["data"]
        }
        assert results["bad"]["status"] == "failed"
        assert results["bad"]["error"]["type"] == "model_not_found"
        assert "grok-9" in results["bad"]["error"]["message"]
        assert "response" not in results["bad"]


def test_openapi_describes_every_endpoint(client: httpx.Client, server) -> None:
    spec = httpx.get(server.base_url + "/openapi.json").json()
    paths = spec["paths"]
    expected = {
        ("/v1/batches", "post"),
        ("/v1/batches", "get"),
        ("/v1/batches/{batch_id}", "get"),
        ("/v1/batches/{batch_id}/requests", "get"),
        ("/v1/batches/{batch_id}/requests", "post"),
        ("/v1/batches/{batch_id}/results", "get"),
        ("/v1/batches/{batch_id}/start", "post"),
        ("/v1/batches/{batch_id}/cancel", "post"),
    }
    found = {(path, method) for path, ops in paths.items() for method in ops}
    assert expected <= found
    add = paths["/v1/batches/{batch_id}/requests"]["post"]
    schema = add["requestBody"]["content"]["application/json"]["schema"]
    assert "requests" in schema["properties"]
    assert "$ref" not in str(schema)
    params = {p["name"] for p in paths["/v1/batches"]["get"]["parameters"]}
    assert {"limit", "after", "status"} <= params
