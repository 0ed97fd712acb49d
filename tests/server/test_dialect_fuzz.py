"""Property-based fuzzing of the dialects' calls that take a body: whatever arrives, the
answer is never a 5xx, and an error is always in the dialect's own shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tablebatch.server import ServerSettings, serve_in_thread
from tablebatch.server.dialects import sdk_base_url

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
MESSAGES = st.fixed_dictionaries(  # near-valid chat or Messages bodies, to get past the shape
    {
        "model": st.one_of(st.text(max_size=8), st.integers()),
        "messages": st.lists(
            st.fixed_dictionaries(
                {"role": st.sampled_from(["user", "assistant", "system", "x"]), "content": JSON}
            ),
            max_size=3,
        ),
    },
    optional={"max_tokens": JSON, "system": JSON, "temperature": JSON, "stop_sequences": JSON},
)
FUZZ = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def root() -> Iterator[tuple[str, httpx.Client]]:
    with serve_in_thread(ServerSettings()) as server, httpx.Client(timeout=30) as http:
        yield server.base_url, http


def _openai_error(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]


@FUZZ
@given(
    lines=st.lists(
        st.one_of(
            JSON,
            st.binary(max_size=30),
            st.fixed_dictionaries(
                {
                    "custom_id": JSON,
                    "method": st.just("POST"),
                    "url": st.just("/v1/chat/completions"),
                    "body": MESSAGES,
                }
            ),
        ),
        max_size=4,
    ),
    spec=JSON,
)
def test_openai_files_and_batches(root: tuple[str, httpx.Client], lines: list[Any], spec) -> None:
    base, http = root
    url = sdk_base_url(base, "openai")
    content = b"\n".join(x if isinstance(x, bytes) else json.dumps(x).encode() for x in lines)
    files = {"file": ("f.jsonl", content)}
    uploaded = http.post(url + "/files", files=files, data={"purpose": "batch"})
    _openai_error(uploaded)
    body = {
        "input_file_id": uploaded.json()["id"],
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    created = http.post(url + "/batches", json=body)
    _openai_error(created)
    _openai_error(http.get(url + f"/batches/{created.json()['id']}"))
    _openai_error(http.post(url + "/batches", json=spec))


@FUZZ
@given(
    requests=st.lists(
        st.fixed_dictionaries(
            {"custom_id": st.one_of(st.from_regex(r"[a-z0-9_-]{1,8}", fullmatch=True), JSON)},
            optional={"params": st.one_of(JSON, MESSAGES)},
        ),
        max_size=4,
    ),
    raw=JSON,
)
def test_anthropic_create(root: tuple[str, httpx.Client], requests: list, raw) -> None:
    base, http = root
    url = sdk_base_url(base, "anthropic") + "/v1/messages/batches"
    headers = {"anthropic-version": "2023-06-01"}
    for body in ({"requests": requests}, raw):
        response = http.post(url, json=body, headers=headers)
        assert response.status_code < 500, response.text
        if response.status_code >= 400:
            error = response.json()
            assert error["type"] == "error" and error["error"]["message"]


@FUZZ
@given(
    items=st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                "batch_request_id": st.one_of(st.text(max_size=10), JSON),
                "batch_request": st.one_of(
                    JSON, st.fixed_dictionaries({"chat_get_completion": st.one_of(JSON, MESSAGES)})
                ),
            },
        ),
        max_size=4,
    ),
    raw=JSON,
)
def test_xai_add(root: tuple[str, httpx.Client], items: list, raw) -> None:
    base, http = root
    url = sdk_base_url(base, "xai")
    batch_id = http.post(url + "/batches", json={"name": "fuzz"}).json()["batch_id"]
    for body in ({"batch_requests": items}, raw):
        response = http.post(url + f"/batches/{batch_id}/requests", json=body)
        assert response.status_code < 500, response.text
        if response.status_code >= 400:
            assert set(response.json()) == {"code", "error"}
