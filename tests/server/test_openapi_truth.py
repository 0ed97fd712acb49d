"""The OpenAPI document says what the server does, one family of schemathesis's
findings (issue 20) at a time: each test reads the document and checks a real answer
of the server against it."""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema
import pytest

from tablebatch.server import RunningServer
from tests.helpers import chat, new_batch

KEY = "sk-truth"
AUTH = {"Authorization": f"Bearer {KEY}"}
ANTHROPIC = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}


@pytest.fixture
def keyed(server_factory) -> RunningServer:
    return server_factory(api_keys=[KEY])


def document(server: RunningServer) -> dict[str, Any]:
    return httpx.get(server.base_url + "/openapi.json").json()


def operation(doc: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    return doc["paths"][path][method.lower()]


def check(doc: dict[str, Any], method: str, path: str, response: httpx.Response) -> None:
    """The answer's status is documented for the route, and its body fits that entry."""
    responses = operation(doc, method, path)["responses"]
    assert str(response.status_code) in responses, (response.status_code, sorted(responses))
    schema = responses[str(response.status_code)]["content"]["application/json"]["schema"]
    jsonschema.validate(response.json(), {**schema, "components": doc.get("components", {})})


def test_a_role_that_is_not_a_string_is_a_400_naming_the_item_and_field(server) -> None:
    """The 500 schemathesis found: ``role: {}`` could not be looked up in a set."""
    http = httpx.Client(base_url=server.url)
    batch = new_batch(http, n=0)
    payload = {
        "requests": [
            {"custom_id": "0", "body": {"messages": [{"content": None, "role": {}}], "model": "0"}}
        ]
    }
    response = http.post(f"/batches/{batch['id']}/requests", json=payload)
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert "requests[0] (custom_id '0')" in message and "body.messages[0].role" in message
    assert response.json()["error"]["items"] == [{"index": 0, "custom_id": "0"}]
    check(document(server), "POST", "/v1/batches/{batch_id}/requests", response)
    for role in ([], 7, None):  # any other non-string role, and through the xAI dialect
        payload["requests"][0]["body"]["messages"][0]["role"] = role
        assert http.post(f"/batches/{batch['id']}/requests", json=payload).status_code == 400
    xai = httpx.Client(base_url=server.base_url + "/xai/v1")
    created = xai.post("/batches", json={"name": "roles"}).json()
    body = {"model": "m", "messages": [{"role": {"a": 1}, "content": "x"}]}
    item = {"batch_request_id": "r", "batch_request": {"chat_get_completion": body}}
    answer = xai.post(f"/batches/{created['batch_id']}/requests", json={"batch_requests": [item]})
    assert answer.status_code == 400 and "chat_get_completion.messages[0].role" in answer.text


def test_xai_errors_are_documented_in_xais_shape(keyed) -> None:
    doc = document(keyed)
    for path, item in doc["paths"].items():
        if not path.startswith("/xai/"):
            continue
        for op in item.values():
            for status, response in op["responses"].items():
                if status.startswith("4"):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema["required"] == ["code", "error"], (path, status)
    xai = httpx.Client(base_url=keyed.base_url + "/xai/v1", headers=AUTH)
    missing = xai.get("/batches/batch_nope")
    assert missing.status_code == 404 and set(missing.json()) == {"code", "error"}
    check(doc, "GET", "/xai/v1/batches/{batch_id}", missing)
    wrong = httpx.get(keyed.base_url + "/xai/v1/batches", headers={"Authorization": "Bearer no"})
    assert wrong.status_code == 400  # as api.x.ai answers a wrong key: documented so
    check(doc, "GET", "/xai/v1/batches", wrong)
    check(doc, "POST", "/xai/v1/batches", xai.post("/batches", json={"name": ""}))


def test_anthropic_requires_its_version_header_and_says_so(keyed) -> None:
    doc = document(keyed)
    for path, item in doc["paths"].items():
        if path.startswith("/anthropic/"):
            for method, op in item.items():
                headers = {p["name"]: p for p in op["parameters"] if p["in"] == "header"}
                assert headers["anthropic-version"]["required"] is True, (method, path)
                assert {"x-api-key": []} in op["security"] and {"bearer": []} in op["security"]
    url = keyed.base_url + "/anthropic/v1/messages/batches"
    without = httpx.get(url, headers={"x-api-key": KEY})
    assert without.status_code == 400 and "anthropic-version" in without.text
    check(doc, "GET", "/anthropic/v1/messages/batches", without)
    check(doc, "GET", "/anthropic/v1/messages/batches", httpx.get(url, headers=ANTHROPIC))
    # the create body: a custom_id the pattern forbids is refused whole, as documented
    schema = operation(doc, "POST", "/anthropic/v1/messages/batches")["requestBody"]
    item = schema["content"]["application/json"]["schema"]["properties"]["requests"]["items"]
    assert item["properties"]["custom_id"]["pattern"] == "^[a-zA-Z0-9_-]{1,64}$"
    bad = {"requests": [{"custom_id": "no spaces", "params": {}}]}
    check(
        doc, "POST", "/anthropic/v1/messages/batches", httpx.post(url, json=bad, headers=ANTHROPIC)
    )


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/v1/batches", "after"),
        ("/v1/batches/{batch_id}/requests", "after"),
        ("/v1/batches/{batch_id}/results", "after"),
        ("/openai/v1/batches", "after"),
        ("/anthropic/v1/messages/batches", "after_id"),
        ("/anthropic/v1/messages/batches", "before_id"),
    ],
)
def test_a_cursor_that_names_nothing_is_a_documented_400(keyed, path: str, param: str) -> None:
    doc = document(keyed)
    op = operation(doc, "GET", path)
    assert "400" in op["responses"]
    (cursor,) = [p for p in op["parameters"] if p["name"] == param]
    assert cursor["schema"]["minLength"] == 1  # an empty cursor names nothing either
    batch = new_batch(httpx.Client(base_url=keyed.url, headers=AUTH), n=1)
    url = keyed.base_url + path.replace("{batch_id}", batch["id"])
    headers = ANTHROPIC if path.startswith("/anthropic") else AUTH
    for value in ("batch_000000000000000000000000", "req_0000000000ff", ""):
        response = httpx.get(url, params={param: value}, headers=headers)
        assert response.status_code == 400, response.text
        check(doc, "GET", path, response)
    xai = operation(doc, "GET", "/xai/v1/batches")
    assert (
        "400" in xai["responses"] and "pagination_token" in xai["responses"]["400"]["description"]
    )


def test_openai_upload_and_create_bodies_are_described_as_enforced(keyed) -> None:
    doc = document(keyed)
    openai = httpx.Client(base_url=keyed.base_url + "/openai/v1", headers=AUTH)
    upload = operation(doc, "POST", "/openai/v1/files")["requestBody"]["content"]
    form = upload["multipart/form-data"]["schema"]
    assert form["required"] == ["file", "purpose"]
    assert form["properties"]["purpose"]["enum"] == ["batch"]
    line = (
        b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": '
        + httpx.Request("POST", "/", json=chat("hi")).content
        + b"}\n"
    )
    files = {"file": ("in.jsonl", line)}
    stored = openai.post("/files", files=files, data={"purpose": "batch"})
    assert stored.status_code == 200, stored.text
    for data in ({"purpose": "fine-tune"}, {}):  # what the enum and `required` forbid
        refused = openai.post("/files", files=files, data=data)
        assert refused.status_code == 400, refused.text
        check(doc, "POST", "/openai/v1/files", refused)
    refused = openai.post("/files", data={"purpose": "batch"})  # no file part
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "file"
    create = operation(doc, "POST", "/openai/v1/batches")["requestBody"]["content"]
    schema = create["application/json"]["schema"]
    assert schema["required"] == ["input_file_id", "endpoint", "completion_window"]
    assert schema["properties"]["completion_window"]["enum"] == ["24h"]
    assert schema["properties"]["endpoint"]["enum"] == ["/v1/chat/completions"]
    body = {
        "input_file_id": stored.json()["id"],
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    jsonschema.validate(body, schema)
    assert openai.post("/batches", json=body).status_code == 200
    for change in ({"completion_window": "48h"}, {"endpoint": "/v1/embeddings"}):
        refused = openai.post("/batches", json={**body, **change})
        assert refused.status_code == 400, refused.text
        check(doc, "POST", "/openai/v1/batches", refused)
    check(
        doc,
        "POST",
        "/openai/v1/batches",
        openai.post("/batches", json={**body, "input_file_id": "file-none"}),
    )


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("TRACE", "/v1/batches", "GET, POST"),
        ("DELETE", "/v1/batches/batch_x", "GET"),
        ("PUT", "/v1/batches/batch_x/requests", "GET, POST"),
        ("OPTIONS", "/openai/v1/files", "POST"),
        ("PATCH", "/anthropic/v1/messages/batches/msgbatch_x/cancel", "POST"),
        ("TRACE", "/xai/v1/batches/batch_x/results", "GET"),
        ("TRACE", "/xai/v1/batches/batch_x:cancel", "POST"),
    ],
)
def test_a_405_says_which_methods_the_path_allows(
    server, method: str, path: str, allow: str
) -> None:
    response = httpx.request(method, server.base_url + path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    template = path.replace("msgbatch_x", "{message_batch_id}").replace("batch_x", "{batch_id}")
    documented = {m.upper() for m in document(server)["paths"][template]}
    assert set(allow.split(", ")) == documented
    assert method in response.text  # in the dialect's shape, naming the method


def test_every_link_names_an_operation_of_the_document(server) -> None:
    doc = document(server)
    seen = 0
    for item in doc["paths"].values():
        for op in item.values():
            for link in op["responses"]["200"].get("links", {}).values():
                path, method = link["operationRef"].removeprefix("#/paths/").rsplit("/", 1)
                target = doc["paths"][path.replace("~1", "/").replace("~0", "~")][method]
                names = {p["name"] for p in target.get("parameters", [])}
                assert set(link.get("parameters", {})) <= names, link
                seen += 1
    assert seen >= 15  # create -> get/add/list/results/cancel, in every dialect
