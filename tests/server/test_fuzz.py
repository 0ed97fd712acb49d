"""Property-based fuzzing of every endpoint: whatever arrives, the answer is never a 5xx
and always the one error shape."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tablebatch.server import ServerSettings, serve_in_thread
from tests.helpers import make_requests

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
ITEM = st.fixed_dictionaries(
    {},
    optional={
        "custom_id": st.one_of(st.text(max_size=30), st.integers(), st.none()),
        "body": st.one_of(
            JSON,
            st.fixed_dictionaries(
                {"model": st.one_of(st.text(max_size=10), st.integers()), "messages": JSON}
            ),
        ),
        "extra": JSON,
    },
)
URL_TEXT = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="/?#%"),
    min_size=1,
    max_size=30,
)
FUZZ = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[tuple[httpx.Client, str]]:
    with serve_in_thread(ServerSettings()) as server, httpx.Client(base_url=server.url) as http:
        batch = http.post("/batches", json={"name": "fuzz"}).json()
        http.post(f"/batches/{batch['id']}/requests", json={"requests": make_requests(3)})
        yield http, batch["id"]


def _check(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error["type"], str) and error["message"]


@FUZZ
@given(body=JSON)
def test_create_batch(fuzzed, body) -> None:
    http, _ = fuzzed
    _check(http.post("/batches", json=body))


@FUZZ
@given(items=st.lists(ITEM, max_size=5), raw=st.binary(max_size=60), use_raw=st.booleans())
def test_add_requests(fuzzed, items, raw, use_raw) -> None:
    http, batch_id = fuzzed
    path = f"/batches/{batch_id}/requests"
    if use_raw:
        response = http.post(path, content=raw, headers={"content-type": "application/json"})
    else:
        response = http.post(path, json={"requests": items})
    _check(response)


@FUZZ
@given(
    path=st.sampled_from(
        ["/batches", "/batches/{id}/requests", "/batches/{id}/results", "/batches/{id}"]
    ),
    limit=st.one_of(st.none(), st.integers(-5, 20_000), st.text(max_size=5)),
    after=st.one_of(st.none(), st.text(max_size=40)),
    status=st.one_of(st.none(), st.text(max_size=12), st.sampled_from(["pending", "completed"])),
    batch_id=st.one_of(st.just("mine"), URL_TEXT),
)
def test_reads(fuzzed, path, limit, after, status, batch_id) -> None:
    http, mine = fuzzed
    target = path.replace("{id}", mine if batch_id == "mine" else batch_id)
    params = {
        k: v for k, v in {"limit": limit, "after": after, "status": status}.items() if v is not None
    }
    _check(http.get(target, params=params))


@FUZZ
@given(
    action=st.sampled_from(["start", "cancel"]),
    batch_id=URL_TEXT,
    key=st.text(max_size=300),
)
def test_actions(fuzzed, action, batch_id, key) -> None:
    http, _ = fuzzed
    headers = {"Idempotency-Key": key} if key.isascii() and key.isprintable() and key else {}
    _check(http.post(f"/batches/{batch_id}/{action}", headers=headers))
