"""The model backends: the deterministic offline stand-in, and forwarding upstream."""

from __future__ import annotations

import socket
from collections import Counter
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tablebatch.server import serve_app_in_thread
from tablebatch.server.backends.offline import OfflineBackend, answer, find_choices, sentiment
from tests.helpers import chat, new_batch, wait_for


def _user(text: str, system: str | None = None) -> list[dict[str, Any]]:
    messages = [{"role": "system", "content": system}] if system else []
    return [*messages, {"role": "user", "content": text}]


def _complete(body: dict[str, Any]) -> dict[str, Any]:
    (outcome,) = OfflineBackend(clock=lambda: 1_700_000_000).complete(
        [(1, "c", orjson.dumps(body))]
    )
    assert outcome.error is None
    result = orjson.loads(outcome.encoded)
    assert (result["custom_id"], result["status"]) == ("c", "completed")
    return result["response"]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("Is this review positive or negative?", ["positive", "negative"]),
        ("Is it positive, negative, or neutral?", ["positive", "negative", "neutral"]),
        ("Labels: sports, politics, technology\n\ntext", ["sports", "politics", "technology"]),
        ("Answer with one of: yes | no", ["yes", "no"]),
        ("Choose from [billing, shipping, returns].", ["billing", "shipping", "returns"]),
        ("Tell me about the weather today.", None),
    ],
)
def test_choices_are_found_in_the_prompt(prompt: str, expected: list[str] | None) -> None:
    found = find_choices(prompt)
    assert (found[0] if found else None) == expected


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("Great sound and I love it. Highly recommended.", "positive"),
        ("It broke after a week. Terrible, a waste of money.", "negative"),
        ("Not good at all.", "negative"),
        ("It does not leak. Very pleased.", "positive"),
        ("Never disappointing, always reliable.", "positive"),
    ],
)
def test_sentiment_uses_the_lexicon(text: str, label: str) -> None:
    prompt = f"Is this review positive or negative?\n\n{text}"
    assert answer(_user(prompt)) == label


def test_neutral_when_nothing_leans() -> None:
    prompt = "Is this positive, negative or neutral?\n\nThe box is blue."
    assert sentiment("The box is blue.") == 0
    assert answer(_user(prompt)) == "neutral"


def test_choices_may_come_from_the_system_prompt() -> None:
    messages = _user("I love this kettle!", system="Classify sentiment. Labels: negative, positive")
    assert answer(messages) == "positive"


def test_topic_choices_prefer_words_in_the_text_and_are_always_a_choice() -> None:
    prompt = "Which topic: sports, politics or technology?\n\nThe new technology chip is fast."
    assert answer(_user(prompt)) == "technology"
    for i in range(50):
        got = answer(_user(f"Is this spam or ham?\n\nMessage {i} about a meeting."))
        assert got in ("spam", "ham")


def test_summaries_are_extracts_of_the_text() -> None:
    text = "Summarize this review in one sentence.\n\nThe tent was easy to set up. It rained."
    assert answer(_user(text)) == "The tent was easy to set up."
    assert answer(_user("Summarize: The cat sat on the mat. Then it slept.")) == (
        "The cat sat on the mat."
    )


def test_the_same_request_always_gets_the_same_answer() -> None:
    body = chat("Is this positive or negative?\n\nMeh, could be better.", temperature=1.5)
    first, second = _complete(body), _complete(body)
    assert first == second
    assert first["id"].startswith("chatcmpl-")
    assert first["created"] == 1_700_000_000
    other = _complete(chat("Is this positive or negative?\n\nSomething else."))
    assert other["id"] != first["id"]


def test_helper_processes_answer_as_the_thread_does() -> None:
    rows = [
        (i, f"c{i}", orjson.dumps(chat(f"Is it good or bad?\n\nItem {i} is {'great' * (i % 3)}.")))
        for i in range(600)
    ]
    parallel = OfflineBackend(clock=lambda: 5, processes=2).complete(rows)
    inline = OfflineBackend(clock=lambda: 5, processes=0).complete(rows)
    assert len(parallel) == 600
    assert [(o.n, o.encoded) for o in parallel] == [(o.n, o.encoded) for o in inline]


def test_usage_is_counted_by_a_fixed_rule() -> None:
    response = _complete(chat("one two three"))  # 13 characters: 4 tokens
    usage = response["usage"]
    assert usage["prompt_tokens"] == 4 + 4 + 3
    assert usage["completion_tokens"] >= 1
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_max_tokens_cuts_the_answer() -> None:
    long_text = "Summarize: " + " ".join(f"word{i}" for i in range(40)) + "."
    full = _complete(chat(long_text))
    cut = _complete(chat(long_text, max_tokens=5))
    assert full["choices"][0]["finish_reason"] == "stop"
    assert cut["choices"][0]["finish_reason"] == "length"
    assert cut["choices"][0]["message"]["content"] == "word0 word1 word2"
    assert cut["usage"]["completion_tokens"] == 5  # 17 characters


def test_content_parts_are_read() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Is it good or bad?"}]},
        ],
    }
    assert _complete(body)["choices"][0]["message"]["content"] in ("good", "bad")


# -- the openai backend, against a small fake OpenAI-compatible server ------------------


class FakeUpstream:
    """An OpenAI-compatible /chat/completions that fails on cue."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.auth: set[str | None] = set()
        self.formats: dict[str, object] = {}
        self.app = FastAPI()
        self.app.post("/v1/chat/completions")(self.complete)

    async def complete(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.auth.add(request.headers.get("authorization"))
        text = body["messages"][-1]["content"]
        self.calls[text] += 1
        self.formats[text] = body.get("response_format")
        if text.startswith("FAIL400"):
            return JSONResponse({"error": {"message": "prompt rejected"}}, status_code=400)
        if text.startswith("FLAKY") and self.calls[text] == 1:
            return JSONResponse({"error": "busy"}, status_code=503, headers={"Retry-After": "0"})
        if text.startswith("GARBAGE"):
            return JSONResponse({"nothing": True})
        if text.startswith("NULLMSG"):
            return JSONResponse({"choices": [{"message": None}]})
        if text.startswith("BADGZIP"):
            return Response(b"not gzip", headers={"content-encoding": "gzip"})
        return JSONResponse(
            {
                "id": "chatcmpl-up",
                "object": "chat.completion",
                "created": 1,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text.upper()},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
            }
        )


def test_openai_backend_forwards_and_records_errors(server_factory) -> None:
    upstream = FakeUpstream()
    with serve_app_in_thread(upstream.app) as root:
        server = server_factory(
            backend="openai",
            upstream_url=root + "/v1/",
            upstream_api_key="upstream-secret",
            upstream_concurrency=4,
            upstream_max_retries=1,
        )
        with httpx.Client(base_url=server.url) as http:
            batch = new_batch(http)
            texts = [
                "hello",
                "FLAKY one",
                "FAIL400 please",
                "GARBAGE",
                "NULLMSG",
                "BADGZIP",
                *[f"n{i}" for i in range(20)],
            ]
            requests = [{"custom_id": t, "body": chat(t)} for t in texts]
            http.post(f"/batches/{batch['id']}/requests", json={"requests": requests})
            http.post(f"/batches/{batch['id']}/start").raise_for_status()
            done = wait_for(http, batch["id"])
            results = {
                r["custom_id"]: r
                for r in http.get(f"/batches/{batch['id']}/results", params={"limit": 100}).json()[
                    "data"
                ]
            }
    assert done["status"] == "completed"
    assert (done["completed_count"], done["failed_count"]) == (22, 4)
    assert results["hello"]["response"]["choices"][0]["message"]["content"] == "HELLO"
    assert results["FLAKY one"]["status"] == "completed"
    assert upstream.calls["FLAKY one"] == 2
    assert results["FAIL400 please"]["status"] == "failed"
    assert results["FAIL400 please"]["error"]["type"] == "upstream_error"
    assert "400" in results["FAIL400 please"]["error"]["message"]
    assert "prompt rejected" in results["FAIL400 please"]["error"]["message"]
    assert upstream.calls["FAIL400 please"] == 1  # a 400 is not retried
    assert results["GARBAGE"]["error"]["type"] == "upstream_invalid_response"
    assert results["NULLMSG"]["error"]["type"] == "upstream_invalid_response"
    assert results["BADGZIP"]["error"]["type"] in ("upstream_error", "upstream_unreachable")
    assert done["usage"]["prompt_tokens"] == 7 * 22
    assert upstream.auth == {"Bearer upstream-secret"}


def test_openai_backend_sends_a_schema_as_llama_cpp_python_takes_it(server_factory) -> None:
    schema = {"type": "object", "properties": {"stars": {"type": "integer"}}}
    openai_form = {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}
    upstream = FakeUpstream()
    with serve_app_in_thread(upstream.app) as root:
        server = server_factory(
            backend="openai", upstream_url=root + "/v1", upstream_schema_as="json_object"
        )
        with httpx.Client(base_url=server.url) as http:
            batch = new_batch(http)
            bodies = {
                "schema": chat("schema") | {"response_format": openai_form},
                "object": chat("object") | {"response_format": {"type": "json_object"}},
                "text": chat("text"),
            }
            requests = [{"custom_id": k, "body": b} for k, b in bodies.items()]
            http.post(f"/batches/{batch['id']}/requests", json={"requests": requests})
            http.post(f"/batches/{batch['id']}/start").raise_for_status()
            assert wait_for(http, batch["id"])["completed_count"] == 3
    assert upstream.formats == {
        "schema": {"type": "json_object", "schema": schema},
        "object": {"type": "json_object"},  # anything else goes up as it came
        "text": None,
    }


def test_openai_backend_unreachable_upstream(server_factory) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = server_factory(
        backend="openai", upstream_url=f"http://127.0.0.1:{port}/v1", upstream_max_retries=0
    )
    with httpx.Client(base_url=server.url) as http:
        batch = new_batch(http, n=3)
        http.post(f"/batches/{batch['id']}/start").raise_for_status()
        done = wait_for(http, batch["id"])
        results = http.get(f"/batches/{batch['id']}/results").json()["data"]
    assert done["failed_count"] == 3
    assert {r["error"]["type"] for r in results} == {"upstream_unreachable"}


def test_openai_backend_needs_an_url() -> None:
    from tablebatch.server import ServerSettings, create_app

    with pytest.raises(ValueError, match="upstream_url"):
        create_app(ServerSettings(backend="openai"))


def test_a_server_starts_no_helper_for_small_chunks() -> None:
    backend = OfflineBackend(clock=lambda: 5, processes=2)
    backend.warm_up()  # what a server's start does: helpers wait for a large chunk
    rows = [(i, f"c{i}", orjson.dumps(chat(f"Is item {i} good or bad?"))) for i in range(24)]
    assert len(backend.complete(rows)) == 24
    assert backend._warming is None  # a 24-row job paid no helper process
