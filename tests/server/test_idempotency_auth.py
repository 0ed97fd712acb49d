"""Idempotency-Key on every POST, and bearer-key auth that never leaks the key."""

from __future__ import annotations

import logging

import httpx
import pytest

from tests.helpers import make_requests, new_batch, wait_for

KEY = "sk-test-7f3a9c0e1d2b"


def test_a_retried_create_makes_one_batch(client: httpx.Client) -> None:
    headers = {"Idempotency-Key": "create-1"}
    first = client.post("/batches", json={"name": "x"}, headers=headers)
    again = client.post("/batches", json={"name": "x"}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert len(client.get("/batches").json()["data"]) == 1
    other = client.post("/batches", json={"name": "x"}, headers={"Idempotency-Key": "create-2"})
    assert other.json()["id"] != first.json()["id"]


def test_same_key_with_another_body_is_a_conflict(client: httpx.Client) -> None:
    headers = {"Idempotency-Key": "k"}
    client.post("/batches", json={"name": "x"}, headers=headers).raise_for_status()
    response = client.post("/batches", json={"name": "y"}, headers=headers)
    assert response.status_code == 409
    assert "Idempotency-Key" in response.json()["error"]["message"]
    batch = new_batch(client)
    response = client.post(f"/batches/{batch['id']}/start", headers=headers)  # another path
    assert response.status_code == 409


def test_a_retried_add_adds_once(client: httpx.Client) -> None:
    batch = new_batch(client)
    headers = {"Idempotency-Key": "add-1"}
    payload = {"requests": make_requests(50)}
    path = f"/batches/{batch['id']}/requests"
    for _ in range(3):
        response = client.post(path, json=payload, headers=headers)
        assert response.status_code == 200
        assert response.json()["request_count"] == 50


def test_a_retried_start_and_cancel_answer_as_the_first_time(server_factory) -> None:
    server = server_factory(faults={"processing_delay_s": 30})
    with httpx.Client(base_url=server.url) as http:
        batch = new_batch(http, n=3)
        start = f"/batches/{batch['id']}/start"
        first = http.post(start, headers={"Idempotency-Key": "s"})
        again = http.post(start, headers={"Idempotency-Key": "s"})
        assert first.status_code == again.status_code == 200
        assert again.json()["status"] == "processing"
        assert http.post(start).status_code == 409  # without the key it is a second start
        cancel = f"/batches/{batch['id']}/cancel"
        first = http.post(cancel, headers={"Idempotency-Key": "c"})
        wait_for(http, batch["id"])
        again = http.post(cancel, headers={"Idempotency-Key": "c"})
        assert again.status_code == 200 and again.json() == first.json()


def test_a_failed_call_is_not_remembered(client: httpx.Client) -> None:
    batch = new_batch(client)
    headers = {"Idempotency-Key": "start-too-early"}
    assert client.post(f"/batches/{batch['id']}/start", headers=headers).status_code == 409
    client.post(f"/batches/{batch['id']}/requests", json={"requests": make_requests(1)})
    assert client.post(f"/batches/{batch['id']}/start", headers=headers).status_code == 200


def test_keys_are_scoped_to_the_caller(server_factory) -> None:
    server = server_factory(api_keys=["key-a", "key-b"])
    a = httpx.Client(base_url=server.url, headers={"Authorization": "Bearer key-a"})
    b = httpx.Client(base_url=server.url, headers={"Authorization": "Bearer key-b"})
    with a, b:
        one = a.post("/batches", json={"name": "x"}, headers={"Idempotency-Key": "same"})
        two = b.post("/batches", json={"name": "x"}, headers={"Idempotency-Key": "same"})
        assert one.json()["id"] != two.json()["id"]


def test_idempotency_survives_a_restart(tmp_path, server_factory) -> None:
    db = str(tmp_path / "s.db")
    headers = {"Idempotency-Key": "durable"}
    with httpx.Client(base_url=server_factory(db=db).url) as http:
        first = http.post("/batches", json={"name": "x"}, headers=headers).json()
    with httpx.Client(base_url=server_factory(db=db).url) as http:
        again = http.post("/batches", json={"name": "x"}, headers=headers).json()
        assert again == first
        assert len(http.get("/batches").json()["data"]) == 1


def test_bad_idempotency_key(client: httpx.Client) -> None:
    response = client.post("/batches", json={"name": "x"}, headers={"Idempotency-Key": "k" * 300})
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["error"]["message"]


# -- auth ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        ({}, "Missing API key"),
        ({"Authorization": "Bearer wrong"}, "Invalid API key"),
        ({"Authorization": f"Basic {KEY}"}, "Malformed"),
        ({"Authorization": "Bearer"}, "Malformed"),
    ],
)
def test_missing_or_wrong_key_is_401(server_factory, headers: dict, words: str) -> None:
    server = server_factory(api_keys=[KEY])
    for method, path in [("GET", "/batches"), ("POST", "/batches"), ("GET", "/batches/x")]:
        response = httpx.request(method, server.url + path, headers=headers, json={"name": "x"})
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        error = response.json()["error"]
        assert error["type"] == "authentication_error" and words in error["message"]
        assert KEY not in response.text


def test_the_right_key_works_and_docs_stay_open(server_factory) -> None:
    server = server_factory(api_keys=[KEY, "other"])
    ok = httpx.get(server.url + "/batches", headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200
    assert httpx.get(server.base_url + "/openapi.json").status_code == 200
    assert httpx.get(server.base_url + "/health").json()["status"] == "ok"


def _children(name: str) -> list[logging.Logger]:
    """The loggers below ``name`` created so far."""
    return [
        logger
        for key, logger in logging.Logger.manager.loggerDict.items()
        if key.startswith(name + ".") and isinstance(logger, logging.Logger)
    ]


def test_keys_never_reach_the_logs(
    server_factory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "tablebatch"):  # whatever an earlier test set them to
        caplog.set_level(logging.DEBUG, logger=name)
        for logger in [logging.getLogger(name), *_children(name)]:
            monkeypatch.setattr(logger, "disabled", False)  # a logging.config call may have
    server = server_factory(api_keys=[KEY])
    good = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=server.url, headers=good) as http:
        batch = new_batch(http, n=2)
        http.post(f"/batches/{batch['id']}/start")
        wait_for(http, batch["id"])
        httpx.get(server.url + "/batches", headers={"Authorization": f"Bearer {KEY}x"})
        stored = server.app.state.store._conn.execute("SELECT key FROM idempotency").fetchall()
    assert caplog.records, "nothing was logged: the check would be empty"
    assert KEY not in caplog.text
    assert all(KEY not in row[0] for row in stored)
    settings = server.app.state.settings
    assert KEY not in repr(settings) and KEY not in str(settings.model_dump())
