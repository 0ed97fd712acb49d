"""The Anthropic dialect against a fake Message Batches API (shapes from the anthropic SDK's
types): translated requests, tagged ids, the ledger that stands in for names, statuses,
results, and a results_url that must stay on the API's host."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tablebatch.api import RetryPolicy
from tablebatch.api.dialects import AnthropicBatches, Ledger, UnknownStatusError
from tablebatch.api.dialects.anthropic import API_VERSION, name_tag
from tablebatch.api.errors import BatchApiError

NAME = "job--answer-1--a1--s0000"
PARAMS = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "q"}]}


def _lines(ids: list[str], **params: Any) -> list[tuple[str, bytes]]:
    return [
        (
            custom_id,
            orjson.dumps(
                {
                    "custom_id": custom_id,
                    "body": {
                        "model": "claude-x",
                        "messages": [
                            {"role": "system", "content": "Label it."},
                            {"role": "user", "content": f"q:{custom_id}"},
                        ],
                        **params,
                    },
                }
            ),
        )
        for custom_id in ids
    ]


def _time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


class FakeAnthropic:
    """Message batches as Anthropic keeps them; ``end`` plays a batch to its end."""

    def __init__(self, *, results_host: str = "api.anthropic.test", lose_create: int = 0) -> None:
        self.batches: dict[str, dict[str, Any]] = {}
        self.requests: dict[str, list[dict[str, Any]]] = {}
        self.results: dict[str, list[dict[str, Any]]] = {}
        self.calls: Counter[str] = Counter()
        self.seen_headers: list[httpx.Headers] = []
        self.results_host = results_host
        self.lose_create = lose_create
        self.clock = 1_700_000_000.0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/v1")
        self.calls[f"{request.method} {path}"] += 1
        self.seen_headers.append(request.headers)
        if request.method == "POST" and path == "/messages/batches":
            requests = orjson.loads(request.content)["requests"]
            batch = self.add(requests)
            if self.lose_create:
                self.lose_create -= 1
                raise httpx.ReadTimeout("the answer was lost", request=request)
            return httpx.Response(200, json=batch)
        if request.method == "GET" and path == "/messages/batches":
            ordered = sorted(self.batches.values(), key=lambda b: b["created_at"], reverse=True)
            limit = int(request.url.params.get("limit", 20))
            start = 0
            if "after_id" in request.url.params:
                start = [b["id"] for b in ordered].index(request.url.params["after_id"]) + 1
            page = ordered[start : start + limit]
            return httpx.Response(
                200,
                json={
                    "data": page,
                    "has_more": start + limit < len(ordered),
                    "first_id": page[0]["id"] if page else None,
                    "last_id": page[-1]["id"] if page else None,
                },
            )
        if request.method == "GET" and path.endswith("/results"):
            lines = [orjson.dumps(r) for r in self.results[path.split("/")[3]]]
            return httpx.Response(200, content=b"\n".join(lines) + b"\n")
        if request.method == "GET" and path.startswith("/messages/batches/"):
            return httpx.Response(200, json=self.batches[path.split("/")[3]])
        if request.method == "POST" and path.endswith("/cancel"):
            batch = self.batches[path.split("/")[3]]
            batch["processing_status"] = "canceling"
            batch["cancel_initiated_at"] = _time(self.clock)
            return httpx.Response(200, json=batch)
        raise AssertionError(f"unexpected call {request.method} {path}")

    def add(self, requests: list[dict[str, Any]], created: float | None = None) -> dict:
        self.clock += 1
        batch_id = f"msgbatch_{len(self.batches):04d}"
        batch = {
            "id": batch_id,
            "type": "message_batch",
            "processing_status": "in_progress",
            "request_counts": {
                "processing": len(requests),
                "succeeded": 0,
                "errored": 0,
                "canceled": 0,
                "expired": 0,
            },
            "created_at": _time(created or self.clock),
            "expires_at": _time((created or self.clock) + 86400),
            "ended_at": None,
            "cancel_initiated_at": None,
            "archived_at": None,
            "results_url": None,
        }
        self.batches[batch_id] = batch
        self.requests[batch_id] = requests
        return batch

    def end(self, batch_id: str, outcomes: dict[str, str] | None = None) -> None:
        """End the batch: each request succeeds unless ``outcomes`` says errored/canceled/…"""
        outcomes = outcomes or {}
        batch = self.batches[batch_id]
        results = []
        counts = dict.fromkeys(("processing", "succeeded", "errored", "canceled", "expired"), 0)
        for request in self.requests[batch_id]:
            kind = outcomes.get(request["custom_id"], "succeeded")
            counts[kind] = counts.get(kind, 0) + 1
            result: dict[str, Any] = {"type": kind}
            if kind == "succeeded":
                text = request["params"]["messages"][-1]["content"]
                result["message"] = {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": request["params"]["model"],
                    "content": [{"type": "text", "text": f"a:{text}"}],
                    "stop_reason": "end_turn",
                    "usage": {"input_tokens": 7, "output_tokens": 2},
                }
            elif kind == "errored":
                result["error"] = {
                    "type": "error",
                    "error": {"type": "invalid_request_error", "message": "bad params"},
                }
            results.append({"custom_id": request["custom_id"], "result": result})
        self.results[batch_id] = results
        batch["request_counts"] = counts
        batch["processing_status"] = "ended"
        batch["ended_at"] = _time(self.clock)
        batch["results_url"] = f"https://{self.results_host}/v1/messages/batches/{batch_id}/results"


def _client(api: FakeAnthropic, ledger: Ledger | Path | None = None, **options: Any):
    return AnthropicBatches(
        "https://api.anthropic.test/v1",
        "sk-ant-test",
        transport=httpx.MockTransport(api),
        retry=RetryPolicy(max_retries=3, initial_delay=0, jitter=0, rng=random.Random(0)),
        sleep=lambda s: None,
        wall_clock=lambda: api.clock,
        ledger=ledger if isinstance(ledger, Ledger) else Ledger(ledger),
        **options,
    )


def _submit(client: AnthropicBatches, name: str, ids: list[str], **params: Any):
    draft = client.create_batch(name)
    client.add_requests(draft.id, _lines(ids, **params))
    return client.start(draft.id)


def test_requests_are_sent_as_messages_params_with_tagged_ids(tmp_path) -> None:
    api = FakeAnthropic()
    with _client(api, tmp_path / "ledger.jsonl", max_tokens=77) as client:
        batch = _submit(client, NAME, ["id-r1", "row 2"], temperature=0, stop=["."])
    assert batch.status == "processing" and batch.name == NAME and batch.request_count == 2
    sent = api.requests[batch.id]
    tag = name_tag(NAME)
    assert [r["custom_id"] for r in sent] == [f"{tag}-id-r1", f"{tag}-b64_cm93IDI"]
    assert sent[0]["params"] == {
        "model": "claude-x",
        "max_tokens": 77,
        "system": "Label it.",
        "messages": [{"role": "user", "content": "q:id-r1"}],
        "stop_sequences": ["."],
    }  # temperature is not a parameter of this API version: dropped
    headers = api.seen_headers[-1]
    assert headers["x-api-key"] == "sk-ant-test" and "authorization" not in headers
    assert headers["anthropic-version"] == API_VERSION


def test_results_come_back_as_chat_completions_under_the_ids_sent(tmp_path) -> None:
    api = FakeAnthropic()
    with _client(api, tmp_path / "l.jsonl") as client:
        batch = _submit(client, NAME, ["ok", "bad", "stop", "late", "row 5"])
        tag = name_tag(NAME)
        outcomes = {f"{tag}-bad": "errored", f"{tag}-stop": "canceled", f"{tag}-late": "expired"}
        api.end(batch.id, outcomes)
        ended = client.get_batch(batch.id)
        results = {r["custom_id"]: r for page in client.iter_result_pages(batch.id) for r in page}
    assert ended.status == "failed" and ended.error is not None and ended.error.type == "expired"
    assert (ended.completed_count, ended.failed_count, ended.cancelled_count) == (2, 2, 1)
    assert set(results) == {"ok", "bad", "stop", "late", "row 5"}
    answer = results["row 5"]["response"]
    assert answer["choices"][0]["message"]["content"] == "a:q:row 5"
    assert answer["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 2,
        "total_tokens": 9,
        "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
    }
    assert results["bad"]["error"] == {"type": "invalid_request_error", "message": "bad params"}
    assert results["stop"]["status"] == "cancelled"
    assert results["late"]["error"]["type"] == "expired"


@pytest.mark.parametrize(
    ("processing_status", "cancelled", "seed"),
    [
        ("in_progress", False, "processing"),
        ("canceling", True, "cancelling"),
        ("ended", False, "completed"),
        ("ended", True, "cancelled"),
    ],
)
def test_statuses_map_onto_the_seeds(processing_status, cancelled, seed) -> None:
    api = FakeAnthropic()
    raw = api.add([{"custom_id": "x", "params": PARAMS}])
    raw["processing_status"] = processing_status
    raw["cancel_initiated_at"] = _time(api.clock) if cancelled else None
    with _client(api) as client:
        assert client.get_batch(raw["id"]).status == seed


def test_an_unknown_status_or_result_type_stops_with_its_name(tmp_path) -> None:
    api = FakeAnthropic()
    with _client(api, tmp_path / "l.jsonl") as client:
        batch = _submit(client, NAME, ["a"])
        api.end(batch.id, {f"{name_tag(NAME)}-a": "deferred"})
        with pytest.raises(BatchApiError, match="result type 'deferred'"):
            list(client.iter_result_pages(batch.id))
        api.batches[batch.id]["processing_status"] = "archiving"
        with pytest.raises(UnknownStatusError, match="'archiving'"):
            client.get_batch(batch.id)


def test_the_ledger_finds_a_batch_again_in_another_process(tmp_path) -> None:
    api = FakeAnthropic()
    ledger = tmp_path / "ledger.jsonl"
    with _client(api, ledger) as first:
        batch = _submit(first, NAME, ["a", "b"])
    with _client(api, ledger) as second:
        assert second.find_batch(NAME).id == batch.id
        again = _submit(second, NAME, ["a", "b"])  # a run that did not look first
    assert again.id == batch.id and len(api.batches) == 1
    with _client(api, tmp_path / "elsewhere.jsonl") as stranger:
        assert stranger.find_batch(NAME) is None  # the gap: no ledger, no name


def test_a_create_whose_answer_was_lost_is_adopted_not_repeated(tmp_path) -> None:
    api = FakeAnthropic(lose_create=1)
    with _client(api, tmp_path / "l.jsonl") as client:
        batch = _submit(client, NAME, ["a", "b", "c"])
    assert len(api.batches) == 1 and batch.id == "msgbatch_0000"
    assert Ledger(tmp_path / "l.jsonl").ids(NAME) == [batch.id]


def test_a_run_that_died_between_create_and_record_is_resumed(tmp_path) -> None:
    api = FakeAnthropic()
    ledger = Ledger(tmp_path / "l.jsonl")
    tag = name_tag(NAME)
    ledger.intend(NAME, 2, api.clock)  # the run wrote its intent, created, and died
    mine = api.add(
        [{"custom_id": f"{tag}-a", "params": PARAMS}, {"custom_id": f"{tag}-b", "params": PARAMS}]
    )
    api.add([{"custom_id": "x", "params": PARAMS}])  # another job's: another count
    with _client(api, ledger) as client:
        assert client.find_batch(NAME).id == mine["id"]
    assert ledger.ids(NAME) == [mine["id"]] and not ledger.open_intents(NAME)


def test_batches_that_cannot_be_told_apart_are_not_guessed(tmp_path) -> None:
    api = FakeAnthropic()
    ledger = Ledger(tmp_path / "l.jsonl")
    ledger.intend(NAME, 1, api.clock)
    first = api.add([{"custom_id": f"{name_tag('other')}-a", "params": PARAMS}])
    second = api.add([{"custom_id": f"{name_tag(NAME)}-a", "params": PARAMS}])
    with _client(api, ledger) as client:
        with pytest.raises(BatchApiError, match="cannot tell which is its own"):
            client.find_batch(NAME)
        api.end(first["id"])  # ended, its results carry another name's tag: not ours
        assert client.find_batch(NAME).id == second["id"]


def test_results_from_another_host_are_refused_without_sending_the_key(tmp_path) -> None:
    api = FakeAnthropic(results_host="evil.test")
    with _client(api, tmp_path / "l.jsonl") as client:
        batch = _submit(client, NAME, ["a"])
        api.end(batch.id)
        with pytest.raises(BatchApiError, match=r"results_url is on evil\.test"):
            list(client.iter_result_pages(batch.id))
    assert all(h.get("host") == "api.anthropic.test" for h in api.seen_headers)


def test_results_of_another_name_are_not_joined(tmp_path) -> None:
    api = FakeAnthropic()
    ledger = Ledger(tmp_path / "l.jsonl")
    raw = api.add([{"custom_id": f"{name_tag('other')}-a", "params": PARAMS}])
    ledger.record(NAME, raw["id"], api.clock)  # a ledger that points at the wrong batch
    api.end(raw["id"], {f"{name_tag('other')}-a": "errored"})
    with _client(api, ledger) as client:
        assert list(client.iter_result_pages(raw["id"])) == []


def test_an_attempts_batches_are_found_by_their_name_prefix(tmp_path) -> None:
    api = FakeAnthropic()
    ledger = tmp_path / "l.jsonl"
    with _client(api, ledger) as client:
        for name in ("job--a1--s0000", "job--a1--s0001", "job--a2--s0000"):
            _submit(client, name, ["a"])
    with _client(api, ledger) as client:
        found = [b.name for b in client.iter_batches(name_prefix="job--a1--")]
    assert found == ["job--a1--s0001", "job--a1--s0000"]
