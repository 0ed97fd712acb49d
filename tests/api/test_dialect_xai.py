"""The xAI dialect against a fake xAI REST batch API (shapes from xai-proto ``batch.proto``
and xAI's REST docs): statuses read from the state, adds that never repeat a request,
token pages, results of every shape."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import httpx
import orjson
import pytest

from tablebatch.api import AuthenticationError, RetryPolicy
from tablebatch.api.dialects import XaiBatches
from tablebatch.api.errors import BatchApiError


def _lines(n: int, start: int = 0) -> list[tuple[str, bytes]]:
    return [
        (
            f"id-r{i}",
            orjson.dumps(
                {
                    "custom_id": f"id-r{i}",
                    "body": {"model": "grok-4", "messages": [{"role": "user", "content": f"q{i}"}]},
                }
            ),
        )
        for i in range(start, start + n)
    ]


class FakeXai:
    """Batches as xAI keeps them. ``lose_adds`` drops the connection after that many adds
    took effect; ``page`` caps every list page; ``bare_list`` leaves states out of lists."""

    def __init__(self, *, lose_adds: int = 0, page: int = 100, bare_list: bool = False):
        self.batches: dict[str, dict[str, Any]] = {}
        self.requests: dict[str, dict[str, dict[str, Any]]] = {}
        self.results: dict[str, list[dict[str, Any]]] = {}
        self.calls: Counter[str] = Counter()
        self.added: list[str] = []
        self.lose_adds = lose_adds
        self.page = page
        self.bare_list = bare_list
        self.clock = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/v1")
        self.calls[f"{request.method} {path.split('/')[1] if '/' in path else path}"] += 1
        if request.headers.get("authorization") != "Bearer xai-test":  # 400, as at xAI
            return httpx.Response(400, json={"code": "x", "error": "Incorrect API key provided"})
        if request.method == "POST" and path == "/batches":
            return httpx.Response(200, json=self.create(orjson.loads(request.content)["name"]))
        if request.method == "GET" and path == "/batches":
            ordered = sorted(self.batches.values(), key=lambda b: b["create_time"])
            items = [self.view(b) for b in ordered]
            if self.bare_list:
                items = [{k: v for k, v in b.items() if k != "state"} for b in items]
            return self._page(request, "batches", items)
        if request.method == "POST" and path.endswith(":cancel"):
            batch = self.batches[path.split("/")[2].removesuffix(":cancel")]
            batch["cancel_time"] = "2025-01-01T00:00:00Z"
            return httpx.Response(200, json=self.view(batch))
        batch_id = path.split("/")[2]
        if request.method == "POST" and path.endswith("/requests"):
            items = orjson.loads(request.content)["batch_requests"]
            for item in items:
                assert "chat_get_completion" in item["batch_request"]
                self.requests[batch_id][item["batch_request_id"]] = item
                self.added.append(item["batch_request_id"])
            if self.lose_adds:
                self.lose_adds -= 1
                raise httpx.RemoteProtocolError("peer closed connection mid-answer")
            return httpx.Response(200, json={})
        if request.method == "GET" and path.endswith("/requests"):
            metadata = [
                {"batch_request_id": rid, "endpoint": "chat", "model": "grok-4", "state": 1}
                for rid in self.requests[batch_id]
            ]
            return self._page(request, "batch_request_metadata", metadata)
        if request.method == "GET" and path.endswith("/results"):
            return self._page(request, "results", self.results.get(batch_id, []))
        if request.method == "GET":
            return httpx.Response(200, json=self.view(self.batches[batch_id]))
        raise AssertionError(f"unexpected call {request.method} {path}")

    def _page(self, request: httpx.Request, key: str, items: list[Any]) -> httpx.Response:
        limit = min(int(request.url.params.get("limit", 100)), self.page)
        start = int(request.url.params.get("pagination_token") or 0)
        page: dict[str, Any] = {key: items[start : start + limit]}
        if start + limit < len(items):
            page["pagination_token"] = str(start + limit)
        return httpx.Response(200, json=page)

    def create(self, name: str) -> dict[str, Any]:
        self.clock += 1
        batch_id = f"batch_{len(self.batches):04d}"
        self.batches[batch_id] = {
            "batch_id": batch_id,
            "name": name,
            "create_time": f"2025-01-01T00:00:{self.clock:02d}Z",
            "expire_time": "2025-01-02T00:00:00Z",
            "done": {},
        }
        self.requests[batch_id] = {}
        return self.view(self.batches[batch_id])

    def view(self, batch: dict[str, Any]) -> dict[str, Any]:
        n = len(self.requests[batch["batch_id"]])
        done = batch["done"]
        outcomes = Counter(done.values())
        out = {k: v for k, v in batch.items() if k != "done"}
        pending = 0 if batch.get("cancel_time") else n - len(done)
        out["state"] = {
            "num_requests": n,
            "num_pending": pending,
            "num_success": outcomes["ok"],
            "num_error": outcomes["error"],
            "num_cancelled": n - len(done) - pending,
        }
        return out

    def answer(self, batch_id: str, failing: set[str] = frozenset()) -> None:
        batch = self.batches[batch_id]
        results = []
        for rid, item in self.requests[batch_id].items():
            if rid in failing:
                batch["done"][rid] = "error"
                results.append(
                    {
                        "batch_request_id": rid,
                        "batch_result": {"error": {"code": 13, "message": "model failed"}},
                    }
                )
                continue
            batch["done"][rid] = "ok"
            prompt = item["batch_request"]["chat_get_completion"]["messages"][-1]["content"]
            completion = {
                "id": "c",
                "object": "chat.completion",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": f"a:{prompt}"}}
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            }
            results.append(
                {
                    "batch_request_id": rid,
                    "batch_result": {"response": {"chat_get_completion": completion}},
                }
            )
        self.results[batch_id] = results[::-1]  # xAI promises no order


def _client(api: FakeXai, key: str = "xai-test", **options: Any) -> XaiBatches:
    return XaiBatches(
        "https://api.x.test/v1",
        key,
        transport=httpx.MockTransport(api),
        retry=RetryPolicy(max_retries=3, initial_delay=0, jitter=0, rng=random.Random(0)),
        sleep=lambda s: None,
        key_source="$XAI_API_KEY",
        **options,
    )


def test_a_batch_reads_created_pending_processing_completed() -> None:
    api = FakeXai()
    with _client(api) as client:
        batch = client.create_batch("job", model="grok-4")
        assert batch.status == "created" and batch.name == "job"
        client.add_requests(batch.id, _lines(3))
        assert client.get_batch(batch.id).status == "pending"  # adding may not be over
        assert client.start(batch.id).status == "processing"
        api.answer(batch.id)
        done = client.get_batch(batch.id)
    assert (done.status, done.request_count, done.completed_count) == ("completed", 3, 3)
    with _client(api) as another:  # another process cannot know adding is over: pending
        assert another.get_batch(batch.id).status == "pending"


def test_cancels_map_onto_the_seeds_and_xais_own_cancel_is_a_failure() -> None:
    api = FakeXai()
    with _client(api) as client:
        batch = client.create_batch("job")
        client.add_requests(batch.id, _lines(2))
        client.start(batch.id)
        assert client.cancel(batch.id).status == "cancelled"
        api.batches[batch.id].pop("cancel_time")
        api.batches[batch.id]["cancel_by_xai_message"] = "the batch expired"
        failed = client.get_batch(batch.id)
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.message == "the batch expired"


def test_a_batch_without_a_readable_state_stops() -> None:
    api = FakeXai()
    with _client(api) as client:
        batch = client.create_batch("job")
        original = api.view
        api.view = lambda b: {**original(b), "state": {"num_requests": "many"}}
        with pytest.raises(BatchApiError, match="without a readable state"):
            client.get_batch(batch.id)


def test_adds_send_each_request_once_even_after_a_crash_or_a_lost_answer() -> None:
    api = FakeXai(lose_adds=1, page=7)
    with _client(api, max_requests_per_call=10) as client:
        batch = client.create_batch("job")
        first = client.add_requests(batch.id, _lines(25))
        assert (first.added, first.already_present) == (15, 10)  # the lost add was found held
        again = client.add_requests(batch.id, _lines(40))  # a re-run after a crash
    assert (again.added, again.already_present) == (15, 25)
    assert sorted(api.added) == sorted(f"id-r{i}" for i in range(40))


def test_lists_follow_pagination_tokens_and_find_the_newest_of_a_name() -> None:
    api = FakeXai(page=3, bare_list=True)
    with _client(api) as client:
        ids = [client.create_batch(name).id for name in ["a", "job", "b", "c", "job", "d"]]
        assert [b.id for b in client.iter_batches(name="job")] == [ids[4], ids[1]]
        assert client.find_batch("job").id == ids[4]
        assert len(list(client.iter_batches())) == 6
        assert [b.id for b in client.iter_batches(status="created", name="b")] == [ids[2]]


def test_a_token_that_repeats_is_an_error() -> None:
    api = FakeXai()
    api._page = lambda request, key, items: httpx.Response(  # type: ignore[method-assign]
        200, json={key: [], "pagination_token": "same"}
    )
    with _client(api) as client, pytest.raises(BatchApiError, match="repeats 'same'"):
        list(client.iter_batches())


def test_results_of_every_shape_in_the_seeds_shape() -> None:
    api = FakeXai(page=2)
    with _client(api) as client:
        batch = client.create_batch("job")
        client.add_requests(batch.id, _lines(3))
        api.answer(batch.id, failing={"id-r1"})
        api.results[batch.id].append(
            {"batch_request_id": "id-r9", "batch_result": {"error": {"code": 1, "message": "x"}}}
        )
        pages = list(client.iter_result_pages(batch.id, page_size=1000))
        results = {r["custom_id"]: r for page in pages for r in page}
        api.results[batch.id] = [{"batch_request_id": "id-r0", "batch_result": {}}]
        with pytest.raises(BatchApiError, match="neither a chat completion nor an error"):
            list(client.iter_result_pages(batch.id))
    assert [len(p) for p in pages] == [2, 2]
    assert results["id-r0"]["response"]["choices"][0]["message"]["content"] == "a:q0"
    assert results["id-r1"]["status"] == "failed"
    assert results["id-r1"]["error"] == {"type": "internal", "message": "model failed"}
    assert results["id-r9"]["status"] == "cancelled"


def test_a_bad_key_says_where_it_came_from() -> None:
    with _client(FakeXai(), key="xai-wrong") as client, pytest.raises(AuthenticationError) as info:
        client.get_batch("batch_0000")
    assert "Incorrect API key" in str(info.value) and "$XAI_API_KEY" in str(info.value)
    assert "xai-wrong" not in str(info.value)


def test_an_attempts_batches_are_found_by_their_name_prefix() -> None:
    api = FakeXai(page=2)
    with _client(api) as client:
        for name in ("job--a1--s0000", "job--a2--s0000", "job--a1--s0001", "x--a1--s0000"):
            client.create_batch(name)
        found = [b.name for b in client.iter_batches(name_prefix="job--a1--")]
    assert found == ["job--a1--s0001", "job--a1--s0000"]
