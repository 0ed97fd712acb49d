"""BatchClient against fake APIs: pages, chunking, reconciliation, waiting."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import httpx
import orjson
import pytest

from tablebatch.api import (
    BatchApiError,
    BatchClient,
    ConflictError,
    RetryPolicy,
    WaitTimeoutError,
    chunk_requests,
    encode_request,
)


def _policy() -> RetryPolicy:
    return RetryPolicy(max_retries=4, initial_delay=0.1, jitter=0.0, rng=random.Random(0))


def _batch(**fields: Any) -> dict[str, Any]:
    return {"id": "batch_1", "object": "batch", "name": "job", "status": "pending", **fields}


def _requests(n: int, size: int = 10) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"r{i}",
            "body": {"model": "m", "messages": [{"role": "user", "content": "x" * size}]},
        }
        for i in range(n)
    ]


class FakeBatchApi:
    """One batch, its requests and results, behind a MockTransport.

    ``dedupe=False`` models a server that neither honours Idempotency-Key nor
    rejects repeated custom_ids: every request it receives is kept, duplicates
    included. ``fail_adds`` lists what the next add calls do after storing
    ("reset": the connection drops; a status: that error is answered).
    """

    def __init__(self, *, dedupe: bool = True, fail_adds: list[Any] | None = None) -> None:
        self.received: list[str] = []
        self.stored: dict[str, int] = {}
        self.dedupe = dedupe
        self.fail_adds = list(fail_adds or [])
        self.results = [
            {
                "id": f"req_{i}",
                "custom_id": f"r{i}",
                "status": "completed",
                "response": {
                    "id": "c",
                    "choices": [{"message": {"role": "assistant", "content": "ok"}}],
                },
            }
            for i in range(95)
        ]
        self.calls: Counter[str] = Counter()
        self.limits_seen: list[int] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.calls[f"{request.method} {path}"] += 1
        params = request.url.params
        if request.method == "POST" and path.endswith("/requests"):
            items = orjson.loads(request.content)["requests"]
            ids = [item["custom_id"] for item in items]
            existing = [c for c in ids if c in self.stored]
            if self.dedupe and existing:
                return httpx.Response(
                    409,
                    json={
                        "error": {
                            "type": "conflict_error",
                            "message": "exist",
                            "custom_ids": existing,
                        }
                    },
                )
            for custom_id in ids:
                self.received.append(custom_id)
                self.stored[custom_id] = len(self.stored)
            if self.fail_adds:
                failure = self.fail_adds.pop(0)
                if failure == "reset":
                    raise httpx.RemoteProtocolError("peer closed connection mid-answer")
                return httpx.Response(failure, json={"error": {"type": "e", "message": "oops"}})
            return httpx.Response(200, json=_batch(request_count=len(self.stored)))
        if path.endswith("/requests"):
            return self._page(
                [
                    {"id": f"req_{n}", "custom_id": c, "status": "pending"}
                    for c, n in self.stored.items()
                ],
                params,
            )
        if path.endswith("/results"):
            return self._page(self.results, params)
        raise AssertionError(f"unexpected call {request.method} {path}")

    def _page(self, items: list[dict[str, Any]], params: httpx.QueryParams) -> httpx.Response:
        limit = int(params.get("limit", 100))
        self.limits_seen.append(limit)
        start = 0
        if "after" in params:
            start = next(i for i, item in enumerate(items) if item["id"] == params["after"]) + 1
        page = items[start : start + limit]
        return httpx.Response(
            200, json={"object": "list", "data": page, "has_more": start + limit < len(items)}
        )


def _client(api: FakeBatchApi, sleeps: list[float] | None = None, **kw: Any) -> BatchClient:
    sleeps = [] if sleeps is None else sleeps
    return BatchClient(
        "http://api.test/v1",
        "k",
        transport=httpx.MockTransport(api),
        retry=_policy(),
        sleep=sleeps.append,
        **kw,
    )


def test_iterators_walk_every_page() -> None:
    api = FakeBatchApi()
    with _client(api) as client:
        results = list(client.iter_results("batch_1", page_size=7))
    assert [r.custom_id for r in results] == [f"r{i}" for i in range(95)]
    assert api.calls["GET /v1/batches/batch_1/results"] == 14
    assert results[0].response.choices[0].message.content == "ok"


def test_a_page_that_lies_about_has_more_is_an_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"object": "list", "data": [], "has_more": True})

    client = BatchClient("http://api.test/v1", transport=httpx.MockTransport(handler))
    with client, pytest.raises(BatchApiError, match="has_more"):
        list(client.iter_batches())


def test_chunks_fit_by_count_and_by_bytes() -> None:
    encoded = [encode_request(r) for r in _requests(10, size=100)]
    item = len(encoded[0][1]) + 1
    by_count = list(chunk_requests(encoded, max_count=4, max_bytes=10**6))
    assert [len(c) for c in by_count] == [4, 4, 2]
    by_bytes = list(chunk_requests(encoded, max_count=100, max_bytes=15 + 3 * item))
    assert [len(c) for c in by_bytes] == [3, 3, 3, 1]
    for chunk in by_bytes:
        payload = b'{"requests":[' + b",".join(b for _, b in chunk) + b"]}"
        assert len(payload) <= 15 + 3 * item
    with pytest.raises(ValueError, match="'r0' has"):
        list(chunk_requests(encoded, max_count=100, max_bytes=50))


def test_add_requests_sends_calls_that_fit() -> None:
    api = FakeBatchApi()
    encoded_size = len(encode_request(_requests(1, size=200)[0])[1])
    with _client(api, max_requests_per_call=7, max_bytes_per_call=20 + 3 * (encoded_size + 1)) as c:
        result = c.add_requests("batch_1", _requests(20, size=200))
    assert (result.added, result.already_present) == (20, 0)
    assert result.calls == api.calls["POST /v1/batches/batch_1/requests"] == 7  # 3 a call
    assert api.received == [f"r{i}" for i in range(20)]


def test_duplicate_custom_ids_are_refused_before_sending() -> None:
    api = FakeBatchApi()
    with _client(api) as client, pytest.raises(ValueError, match="'r1' is given twice"):
        client.add_requests("batch_1", [*_requests(3), _requests(2)[1]])
    assert api.received == []


@pytest.mark.parametrize("failure", ["reset", 500, 502])
def test_an_ambiguous_add_is_reconciled_not_repeated(failure: Any) -> None:
    # the server stores the first call, then fails to answer; it does not dedupe
    api = FakeBatchApi(dedupe=False, fail_adds=[failure])
    sleeps: list[float] = []
    with _client(api, sleeps, max_requests_per_call=25) as client:
        result = client.add_requests("batch_1", _requests(60))
    assert Counter(api.received) == Counter(f"r{i}" for i in range(60))  # each exactly once
    assert (result.added, result.already_present) == (35, 25)
    assert api.calls["GET /v1/batches/batch_1/requests"] >= 1
    assert sleeps == [0.1]


def test_a_repeat_after_a_crash_sends_only_what_is_missing() -> None:
    api = FakeBatchApi()  # a server that answers 409 with the custom_ids it holds
    with _client(api, max_requests_per_call=10) as client:
        client.add_requests("batch_1", _requests(15))
        result = client.add_requests("batch_1", _requests(40))
    assert (result.added, result.already_present) == (25, 15)
    assert Counter(api.received) == Counter(f"r{i}" for i in range(40))


def test_a_status_conflict_is_raised() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(
                409, json={"error": {"type": "conflict_error", "message": "batch is processing"}}
            )
        return httpx.Response(200, json={"object": "list", "data": [], "has_more": False})

    client = BatchClient("http://api.test/v1", transport=httpx.MockTransport(handler))
    with client, pytest.raises(ConflictError, match="processing"):
        client.add_requests("batch_1", _requests(2))


# -- waiting ------------------------------------------------------------------------


class Polls:
    def __init__(self, statuses: list[tuple[str, int]]) -> None:
        self.statuses = statuses
        self.count = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        status, done = self.statuses[min(self.count, len(self.statuses) - 1)]
        self.count += 1
        return httpx.Response(
            200, json=_batch(status=status, request_count=10, completed_count=done)
        )


def _waiting_client(polls: Polls, sleeps: list[float]) -> BatchClient:
    return BatchClient(
        "http://api.test/v1",
        transport=httpx.MockTransport(polls),
        sleep=sleeps.append,
        clock=lambda: sum(sleeps),
    )


def test_wait_polls_with_a_growing_capped_interval_and_reports_progress() -> None:
    polls = Polls(
        [("pending", 0)] * 2
        + [("processing", 0)] * 3
        + [("processing", 5)] * 3
        + [("completed", 10)]
    )
    sleeps: list[float] = []
    seen: list[tuple[str, int]] = []
    with _waiting_client(polls, sleeps) as client:
        batch = client.wait_for_batch(
            "batch_1",
            poll_interval=1.0,
            max_poll_interval=4.0,
            on_progress=lambda b: seen.append((b.status, b.completed_count)),
        )
    assert batch.status == "completed" and polls.count == 9
    assert sleeps == [1.0, 1.5, 2.25, 3.375, 4.0, 4.0, 4.0, 4.0]
    assert seen == [("pending", 0), ("processing", 0), ("processing", 5), ("completed", 10)]


def test_wait_times_out_with_a_message_that_says_how_to_resume() -> None:
    polls = Polls([("processing", 3)])
    sleeps: list[float] = []
    with _waiting_client(polls, sleeps) as client, pytest.raises(WaitTimeoutError) as info:
        client.wait_for_batch("batch_1", poll_interval=2.0, max_wait=10.0)
    assert sum(sleeps) == pytest.approx(10.0)
    message = str(info.value)
    assert "batch_1" in message and "still processing after 10 s" in message
    assert "wait_for_batch('batch_1')" in message and "run the same job again" in message
    assert info.value.batch.completed_count == 3


def test_a_terminal_batch_returns_at_once() -> None:
    for status in ("completed", "failed", "cancelled"):
        polls, sleeps = Polls([(status, 10)]), []
        with _waiting_client(polls, sleeps) as client:
            assert client.wait_for_batch("batch_1", max_wait=0).status == status
        assert sleeps == []
