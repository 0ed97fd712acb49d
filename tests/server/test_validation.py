"""Adding requests is checked whole before anything is stored; limits; error shapes."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import chat, make_requests, new_batch


def _add(http: httpx.Client, batch_id: str, payload: object) -> httpx.Response:
    return http.post(f"/batches/{batch_id}/requests", json=payload)


def _count(http: httpx.Client, batch_id: str) -> int:
    return http.get(f"/batches/{batch_id}").json()["request_count"]


@pytest.mark.parametrize(
    ("item", "words"),
    [
        ({"body": chat("x")}, "custom_id must be a non-empty string"),
        ({"custom_id": "", "body": chat("x")}, "custom_id must be a non-empty string"),
        ({"custom_id": 7, "body": chat("x")}, "custom_id must be a non-empty string"),
        ({"custom_id": "a" * 513, "body": chat("x")}, "longer than 512"),
        ({"custom_id": "b"}, "body must be an object"),
        ({"custom_id": "b", "body": []}, "body must be an object"),
        ({"custom_id": "b", "body": {"messages": [{"role": "user", "content": "x"}]}}, "model"),
        ({"custom_id": "b", "body": {"model": "m", "messages": []}}, "messages"),
        ({"custom_id": "b", "body": {"model": "m", "messages": ["hi"]}}, "messages[0]"),
        (
            {"custom_id": "b", "body": {"model": "m", "messages": [{"role": "bot"}]}},
            "messages[0].role",
        ),
        (
            {
                "custom_id": "b",
                "body": {"model": "m", "messages": [{"role": "user", "content": 3}]},
            },
            "content",
        ),
        ({"custom_id": "b", "body": chat("x"), "extra": 1}, "unknown field"),
        ({"custom_id": "a\x00b", "body": chat("x")}, "control characters"),
        (
            {"custom_id": "b", "body": {"model": "m", "messages": [{"role": "user"}]}},
            "content is missing",
        ),
        ("just a string", "must be an object"),
    ],
)
def test_a_bad_item_rejects_the_whole_call(client: httpx.Client, item: object, words: str) -> None:
    batch = new_batch(client, n=2)
    payload = {"requests": [*make_requests(3, "good"), item]}
    response = _add(client, batch["id"], payload)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "requests[3]" in error["message"] and words in error["message"]
    assert "nothing was added" in error["message"]
    assert error["items"][0]["index"] == 3
    assert _count(client, batch["id"]) == 2


def test_every_bad_item_is_named(client: httpx.Client) -> None:
    batch = new_batch(client)
    items = make_requests(30)
    for i in range(0, 30, 2):
        del items[i]["body"]["model"]
    response = _add(client, batch["id"], {"requests": items})
    error = response.json()["error"]
    assert "15 of 30 requests are invalid" in error["message"]
    assert "and 5 more" in error["message"]
    assert [x["index"] for x in error["items"]] == list(range(0, 30, 2))


def test_duplicate_custom_ids_in_one_call(client: httpx.Client) -> None:
    batch = new_batch(client)
    items = make_requests(3)
    items.append(dict(items[1]))
    response = _add(client, batch["id"], {"requests": items})
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "requests[3] (custom_id 'r-1')" in message and "repeats requests[1]" in message
    assert _count(client, batch["id"]) == 0


def test_duplicate_custom_ids_across_calls(client: httpx.Client) -> None:
    batch = new_batch(client, n=5)
    response = _add(client, batch["id"], {"requests": make_requests(4, start=3)})
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["type"] == "conflict_error"
    assert sorted(error["custom_ids"]) == ["r-3", "r-4"]
    assert "'r-3'" in error["message"] and "Nothing was added" in error["message"]
    assert _count(client, batch["id"]) == 5
    ok = _add(client, batch["id"], {"requests": make_requests(2, start=5)})
    assert ok.status_code == 200 and ok.json()["request_count"] == 7


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[]", "must be"),
        (b'{"requests": {}}', "must be"),
        (b'{"requests": []}', "empty"),
        (b'{"requests": [], "x": 1}', "unknown field"),
        (b'{"requests": "\xff\xfe"}', "not valid JSON"),
    ],
)
def test_malformed_bodies(client: httpx.Client, raw: bytes, words: str) -> None:
    batch = new_batch(client)
    response = client.post(
        f"/batches/{batch['id']}/requests",
        content=raw,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert words in response.json()["error"]["message"]


def test_create_batch_validation(client: httpx.Client) -> None:
    for body, words in [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x", "endpoint": "/v1/embeddings"}, "endpoint"),
        ({"name": "x", "colour": "red"}, "colour"),
        ({"name": 3}, "name"),
    ]:
        response = client.post("/batches", json=body)
        assert response.status_code == 422, body
        assert words in response.json()["error"]["message"]
    response = client.post(
        "/batches", content=b"{oops", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert client.get("/batches").json()["data"] == []


def test_limits_per_call_and_per_batch(server_factory) -> None:
    server = server_factory(
        limits={
            "max_requests_per_call": 10,
            "max_requests_per_batch": 15,
            "max_bytes_per_call": 6000,
            "max_bytes_per_batch": 4000,
            "max_request_bytes": 1000,
        }
    )
    with httpx.Client(base_url=server.url) as http:
        batch = new_batch(http)

        def too_large(batch_id: str, payload: object, *words: str) -> None:
            response = _add(http, batch_id, payload)
            assert response.status_code == 413, response.text
            error = response.json()["error"]
            assert error["type"] == "request_too_large"
            for word in words:
                assert word in error["message"]

        too_large(batch["id"], {"requests": make_requests(11)}, "11 requests", "10 per call")
        big = [{"custom_id": "big", "body": chat("x" * 1100)}]
        too_large(batch["id"], {"requests": big}, "requests[0] (custom_id 'big')", "1000 bytes")
        huge = [{"custom_id": f"h{i}", "body": chat("y" * 700)} for i in range(9)]
        too_large(batch["id"], {"requests": huge}, "limit is 6000 bytes per call")
        assert _add(http, batch["id"], {"requests": make_requests(10)}).status_code == 200
        too_large(batch["id"], {"requests": make_requests(6, start=10)}, "16 requests", "15 per")
        assert _add(http, batch["id"], {"requests": make_requests(5, start=10)}).status_code == 200
        assert _count(http, batch["id"]) == 15

        other = new_batch(http, "other")
        payload = {"requests": [{"custom_id": f"k{i}", "body": chat("z" * 700)} for i in range(4)]}
        assert _add(http, other["id"], payload).status_code == 200
        too_large(other["id"], {"requests": make_requests(9, "w")}, "4000 bytes per batch")
        assert _count(http, other["id"]) == 4


def test_errors_have_one_shape(client: httpx.Client, server) -> None:
    for response in [
        client.get("/nowhere"),
        client.delete("/batches"),
        client.get("/batches", params={"limit": "x"}),
        client.get("/batches/batch_x"),
    ]:
        error = response.json()["error"]
        assert set(error) >= {"type", "message"} and error["message"]
    assert client.delete("/batches").status_code == 405


WEIRD = [
    b"null",
    b"1e999",
    b'{"requests": [null]}',
    b'{"requests": [{"custom_id": null, "body": null}]}',
    b'{"requests": [{"custom_id": "a", "body": {"model": 1, "messages": 2}}]}',
    b'{"requests": [{"custom_id": "a", "body": {"model": "m", "messages": [{"role": null}]}}]}',
    b'{"requests": [{"custom_id": "\\u0000", "body": {"model": "m", "messages": [{"role": 1}]}}]}',
    b'{"requests": [[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]}',
    b'{"name": {"nested": true}}',
    b'"\\ud800"',
    '{"requests": [{"custom_id": "\u00e9\u6f22\U0001f600", "body": 5}]}'.encode(),
]


def test_no_input_makes_it_answer_500(client: httpx.Client) -> None:
    batch = new_batch(client)
    paths = ["/batches", f"/batches/{batch['id']}/requests", f"/batches/{batch['id']}/start"]
    for raw in WEIRD:
        for path in paths:
            response = client.post(path, content=raw, headers={"content-type": "application/json"})
            assert 400 <= response.status_code < 500, (path, raw, response.text)
            assert response.json()["error"]["message"]
    for params in [{"limit": "1e9"}, {"after": "\x00"}, {"status": ""}, {"after": "req_"}]:
        for path in [
            "/batches",
            f"/batches/{batch['id']}/requests",
            f"/batches/{batch['id']}/results",
        ]:
            response = client.get(path, params=params)
            assert response.status_code < 500, (path, params)
    response = client.get("/batches/" + "x" * 5000)
    assert response.status_code == 404
