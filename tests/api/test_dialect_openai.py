"""The OpenAI dialect against a fake OpenAI Batch API (shapes from the openai SDK's types):
one upload and one batch per draft, found again by its metadata name, statuses, results."""

from __future__ import annotations

import email.parser
import random
from collections import Counter
from typing import Any

import httpx
import orjson
import pytest

from tablebatch.api import AuthenticationError, RetryPolicy
from tablebatch.api.dialects import OpenAIBatches, UnknownStatusError
from tablebatch.api.errors import BatchApiError, ConflictError


def _lines(n: int, start: int = 0) -> list[tuple[str, bytes]]:
    return [
        (
            f"id-r{i}",
            orjson.dumps(
                {
                    "custom_id": f"id-r{i}",
                    "body": {"model": "gpt-x", "messages": [{"role": "user", "content": f"q{i}"}]},
                }
            ),
        )
        for i in range(start, start + n)
    ]


def _form(request: httpx.Request) -> dict[str, bytes]:
    """The parts of a multipart/form-data body, by name."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = email.parser.BytesParser().parsebytes(head + request.content)
    return {
        part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
        for part in message.get_payload()
    }


class FakeOpenAI:
    """Files and batches as OpenAI keeps them; ``finish`` plays the batch to its end."""

    def __init__(self, *, fail_create_after_commit: int = 0) -> None:
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.calls: Counter[str] = Counter()
        self.headers: list[httpx.Headers] = []
        self.fail_create_after_commit = fail_create_after_commit
        self.clock = 1_700_000_000
        self.intercept: Any = None  # a test's own answer to a request, if it gives one

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.intercept is not None:
            answer = self.intercept(request)
            if answer is not None:
                return answer
        path = request.url.path.removeprefix("/v1")
        self.calls[f"{request.method} {path}"] += 1
        self.headers.append(request.headers)
        if request.headers.get("authorization") != "Bearer sk-test":
            return httpx.Response(
                401, json={"error": {"type": "invalid_request_error", "message": "bad key"}}
            )
        if request.method == "POST" and path == "/files":
            form = _form(request)
            assert form["purpose"] == b"batch"
            file_id = f"file-{len(self.files)}"
            self.files[file_id] = form["file"]
            return httpx.Response(200, json={"id": file_id, "object": "file", "purpose": "batch"})
        if request.method == "POST" and path == "/batches":
            body = orjson.loads(request.content)
            assert body["endpoint"] == "/v1/chat/completions" and body["completion_window"] == "24h"
            lines = self.files[body["input_file_id"]].splitlines()
            batch = self.add_batch(len(lines), body.get("metadata"), "validating")
            batch["input_file_id"] = body["input_file_id"]
            if self.fail_create_after_commit:
                self.fail_create_after_commit -= 1
                return httpx.Response(500, json={"error": {"type": "server_error", "message": "x"}})
            return httpx.Response(200, json=batch)
        if request.method == "GET" and path == "/batches":
            ordered = sorted(self.batches.values(), key=lambda b: b["created_at"], reverse=True)
            limit = int(request.url.params.get("limit", 20))
            assert limit <= 100
            start = 0
            if "after" in request.url.params:
                start = [b["id"] for b in ordered].index(request.url.params["after"]) + 1
            page = ordered[start : start + limit]
            more = start + limit < len(ordered)
            return httpx.Response(200, json={"object": "list", "data": page, "has_more": more})
        if request.method == "GET" and path.startswith("/batches/"):
            return httpx.Response(200, json=self.batches[path.split("/")[2]])
        if request.method == "POST" and path.endswith("/cancel"):
            batch = self.batches[path.split("/")[2]]
            if batch["status"] in ("completed", "failed", "expired"):
                return httpx.Response(409, json={"error": {"type": "conflict", "message": "done"}})
            batch["status"] = "cancelling"
            return httpx.Response(200, json=batch)
        if request.method == "GET" and path.endswith("/content"):
            return httpx.Response(200, content=self.files[path.split("/")[2]])
        raise AssertionError(f"unexpected call {request.method} {path}")

    def add_batch(self, total: int, metadata: Any = None, status: str = "in_progress") -> dict:
        self.clock += 1
        batch = {
            "id": f"batch_{len(self.batches):04d}",
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "input_file_id": "file-x",
            "status": status,
            "created_at": self.clock,
            "metadata": metadata,
            "request_counts": {"total": total, "completed": 0, "failed": 0},
        }
        self.batches[batch["id"]] = batch
        return batch

    def finish(self, batch_id: str, failing: set[str] = frozenset(), status: str = "completed"):
        """Answer every request (``failing`` ones with an error), as OpenAI writes its files."""
        batch = self.batches[batch_id]
        out, errors = [], []
        for line in self.files[batch["input_file_id"]].splitlines():
            request = orjson.loads(line)
            custom_id = request["custom_id"]
            if custom_id in failing:
                errors.append(
                    {
                        "id": f"req_{custom_id}",
                        "custom_id": custom_id,
                        "response": {
                            "status_code": 400,
                            "body": {"error": {"type": "invalid_request_error", "message": "no"}},
                        },
                        "error": None,
                    }
                )
                continue
            answer = {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": f"a:{custom_id}"}}
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
            }
            out.append(
                {
                    "id": f"req_{custom_id}",
                    "custom_id": custom_id,
                    "response": {"status_code": 200, "request_id": "r", "body": answer},
                    "error": None,
                }
            )
        for key, rows in (("output_file_id", out), ("error_file_id", errors)):
            if rows:
                file_id = f"file-{len(self.files)}"
                self.files[file_id] = b"\n".join(orjson.dumps(r) for r in rows) + b"\n"
                batch[key] = file_id
        batch["status"] = status
        batch["request_counts"] = {
            "total": len(out) + len(errors),
            "completed": len(out),
            "failed": len(errors),
        }


def _client(api: FakeOpenAI, key: str = "sk-test", **options: Any) -> OpenAIBatches:
    return OpenAIBatches(
        "https://api.openai.test/v1",
        key,
        transport=httpx.MockTransport(api),
        retry=RetryPolicy(max_retries=3, initial_delay=0, jitter=0, rng=random.Random(0)),
        sleep=lambda s: None,
        key_source="$OPENAI_API_KEY",
        **options,
    )


def test_nothing_is_sent_until_start_then_one_file_and_one_named_batch() -> None:
    api = FakeOpenAI()
    with _client(api) as client:
        draft = client.create_batch("job--answer-1--a1--s0000", model="gpt-x", description="d")
        assert draft.status == "created" and draft.id.startswith("draft_")
        assert client.add_requests(draft.id, _lines(3)).added == 3
        assert client.add_requests(draft.id, _lines(4)).already_present == 3  # a repeat is free
        assert client.find_batch("job--answer-1--a1--s0000").status == "pending"
        assert not [c for c in api.calls if c.startswith("POST")]  # nothing sent yet
        batch = client.start(draft.id)
    assert api.calls["POST /files"] == 1 and api.calls["POST /batches"] == 1
    assert batch.status == "processing" and batch.request_count == 4
    assert batch.name == "job--answer-1--a1--s0000"
    sent = [orjson.loads(line) for line in api.files["file-0"].splitlines()]
    assert sent[0] == {
        "custom_id": "id-r0",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-x", "messages": [{"role": "user", "content": "q0"}]},
    }
    metadata = api.batches[batch.id]["metadata"]
    name = "job--answer-1--a1--s0000"
    assert metadata == {"tablebatch_name": name, "name": name, "description": "d"}


def test_a_re_run_finds_its_batch_by_metadata_across_pages_and_sends_nothing() -> None:
    api = FakeOpenAI()
    with _client(api) as first:
        draft = first.create_batch("mine")
        first.add_requests(draft.id, _lines(2))
        mine = first.start(draft.id)
    for _ in range(250):  # other jobs' batches, newer than ours: three pages of them
        api.add_batch(1, {"tablebatch_name": "other"})
    api.calls.clear()
    with _client(api) as again:
        found = again.find_batch("mine")
        assert found is not None and found.id == mine.id
        draft = again.create_batch("mine")  # a run that did not look first
        again.add_requests(draft.id, _lines(2))
        assert again.start(draft.id).id == mine.id
    assert api.calls["POST /files"] == 0 and api.calls["POST /batches"] == 0
    assert api.calls["GET /batches"] >= 3


def test_a_create_whose_answer_was_lost_is_found_not_repeated() -> None:
    api = FakeOpenAI(fail_create_after_commit=1)
    with _client(api) as client:
        draft = client.create_batch("lost")
        client.add_requests(draft.id, _lines(2))
        batch = client.start(draft.id)
    assert len(api.batches) == 1 and batch.id == "batch_0000"


@pytest.mark.parametrize(
    ("status", "seed"),
    [
        ("validating", "processing"),
        ("in_progress", "processing"),
        ("finalizing", "processing"),
        ("completed", "completed"),
        ("failed", "failed"),
        ("expired", "failed"),
        ("cancelling", "cancelling"),
        ("cancelled", "cancelled"),
    ],
)
def test_statuses_map_onto_the_seeds(status: str, seed: str) -> None:
    api = FakeOpenAI()
    raw = api.add_batch(10, {"tablebatch_name": "n"}, status)
    raw["request_counts"] = {"total": 10, "completed": 6, "failed": 1}
    with _client(api) as client:
        batch = client.get_batch(raw["id"])
    assert batch.status == seed
    assert batch.pending_count == (3 if seed in ("processing", "cancelling") else 0)
    if status == "expired":
        assert batch.error is not None and batch.error.type == "expired"


def test_an_unknown_status_stops_with_its_name() -> None:
    api = FakeOpenAI()
    raw = api.add_batch(1, None, "paused")
    with _client(api) as client, pytest.raises(UnknownStatusError, match="'paused'"):
        client.get_batch(raw["id"])


def test_results_come_from_both_files_in_the_seeds_shape() -> None:
    api = FakeOpenAI()
    with _client(api) as client:
        draft = client.create_batch("r")
        client.add_requests(draft.id, _lines(5))
        batch = client.start(draft.id)
        api.finish(batch.id, failing={"id-r1", "id-r3"})
        assert client.get_batch(batch.id).status == "completed"
        pages = list(client.iter_result_pages(batch.id, page_size=2))
    assert [len(p) for p in pages] == [2, 2, 1]
    results = {r["custom_id"]: r for page in pages for r in page}
    assert results["id-r0"]["status"] == "completed"
    assert results["id-r0"]["response"]["choices"][0]["message"]["content"] == "a:id-r0"
    assert results["id-r1"]["status"] == "failed"
    assert results["id-r1"]["error"] == {"type": "invalid_request_error", "message": "no"}


def test_cancelled_and_expired_requests_say_so() -> None:
    api = FakeOpenAI()
    raw = api.add_batch(2, {"tablebatch_name": "c"}, "cancelled")
    api.files["file-e"] = b"\n".join(
        orjson.dumps({"id": f"q{i}", "custom_id": f"id-{i}", "response": None, "error": e})
        for i, e in enumerate(
            [
                {"code": "batch_cancelled", "message": "cancelled"},
                {"code": "batch_expired", "message": "expired"},
            ]
        )
    )
    raw["error_file_id"] = "file-e"
    with _client(api) as client:
        (page,) = client.iter_result_pages(raw["id"])
    assert [(r["status"], r["error"]["type"]) for r in page] == [
        ("cancelled", "cancelled"),
        ("failed", "expired"),
    ]


def test_a_draft_is_only_added_to_and_a_sent_batch_only_cancelled() -> None:
    api = FakeOpenAI()
    with _client(api) as client:
        draft = client.create_batch("d")
        with pytest.raises(ConflictError, match="has no requests"):
            client.start(draft.id)
        assert client.cancel(draft.id).status == "cancelled"
        assert client.find_batch("d") is None  # a cancelled draft is gone, never sent
        draft = client.create_batch("d")
        client.add_requests(draft.id, _lines(1))
        batch = client.start(draft.id)
        with pytest.raises(ConflictError, match="take all their requests when they are created"):
            client.add_requests(batch.id, _lines(1, start=5))
        assert client.cancel(batch.id).status == "cancelling"
        api.finish(batch.id)
        with pytest.raises(ConflictError):
            client.cancel(batch.id)


def test_a_batch_over_openais_limits_is_refused_before_sending() -> None:
    api = FakeOpenAI()
    with _client(api) as client:
        client.max_batch_requests = 3
        draft = client.create_batch("big")
        client.add_requests(draft.id, _lines(4))
        with pytest.raises(BatchApiError, match="openai takes at most 3 requests"):
            client.start(draft.id)
    assert not api.calls
    assert OpenAIBatches.limits.max_requests == 50_000
    assert OpenAIBatches.limits.max_bytes is not None and OpenAIBatches.limits.max_bytes < 200e6


def test_a_bad_key_says_where_it_came_from_and_is_never_shown() -> None:
    api = FakeOpenAI()
    with _client(api, key="sk-wrong-secret") as client, pytest.raises(AuthenticationError) as info:
        client.get_batch("batch_0")
    assert "$OPENAI_API_KEY" in str(info.value)
    assert "sk-wrong-secret" not in str(info.value) and "sk-wrong-secret" not in repr(client)


def test_an_attempts_batches_are_found_by_their_name_prefix() -> None:
    api = FakeOpenAI()
    with _client(api) as client:
        for name in ("job--a1--s0000", "job--a1--s0001", "job--a2--s0000", "other--a1--s0000"):
            draft = client.create_batch(name)
            client.add_requests(draft.id, _lines(1))
            client.start(draft.id)
        draft = client.create_batch("job--a1--s0002")  # not sent yet: a draft, listed last
        found = [b.name for b in client.iter_batches(name_prefix="job--a1--")]
    assert found == ["job--a1--s0001", "job--a1--s0000", "job--a1--s0002"]


class _Dropping(httpx.SyncByteStream):
    """A body that sends ``lines`` and then loses the connection."""

    def __init__(self, lines: list[bytes]) -> None:
        self.lines = lines

    def __iter__(self):
        for line in self.lines:
            yield line + b"\n"
        raise httpx.ReadError("connection reset mid-download")


def test_a_download_cut_short_resumes_without_giving_a_line_twice() -> None:
    api = FakeOpenAI()
    with _client(api) as client:
        draft = client.create_batch("dl")
        client.add_requests(draft.id, _lines(6))
        batch = client.start(draft.id)
        api.finish(batch.id)
        output = api.batches[batch.id]["output_file_id"]
        lines = api.files[output].splitlines()
        served = []

        def content(request: httpx.Request) -> httpx.Response | None:
            if not request.url.path.endswith(f"/files/{output}/content"):
                return None
            served.append(1)
            if len(served) == 1:  # the first download drops after three lines
                return httpx.Response(200, stream=_Dropping(lines[:3]))
            return httpx.Response(200, content=b"\n".join(lines[::-1]))  # in another order

        api.intercept = content
        results = [r["custom_id"] for page in client.iter_result_pages(batch.id) for r in page]
    assert len(served) == 2
    assert sorted(results) == sorted(f"id-r{i}" for i in range(6))  # each once
