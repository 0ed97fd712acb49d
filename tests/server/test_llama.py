"""The llama backend: a real model (SmolLM2-135M-Instruct) answering batches on CPU.

One server (and one pool of model processes, which every llama server of the test
process shares) serves the module; answers are short, so the model's time stays small.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tablebatch.server import RunningServer, ServerSettings, serve_in_thread
from tablebatch.server.backends.llama import pool_shape
from tablebatch.server.settings import LlamaSettings
from tests.helpers import chat, new_batch, wait_for

pytestmark = pytest.mark.llama

MODEL = "any-name-at-all"  # with no --model given, the default GGUF answers under any name


@pytest.fixture(scope="module")
def llama_server() -> Iterator[RunningServer]:
    with serve_in_thread(ServerSettings(backend="llama")) as server:
        yield server


@pytest.fixture
def http(llama_server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=llama_server.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def tokenizer() -> Iterator[Any]:
    """The model itself, in the test process, to count tokens with (vocab only: no weights)."""
    from llama_cpp import Llama

    from tablebatch.server.backends.llama_model import default_gguf

    llm = Llama(model_path=str(default_gguf()), vocab_only=True, verbose=False)
    yield llm
    llm.close()


def _run(http: httpx.Client, bodies: list[dict[str, Any]], timeout: float = 120) -> list[dict]:
    """One batch of ``bodies``, started and waited for; its results in order."""
    batch = new_batch(http, name="llama-test")
    requests = [{"custom_id": f"r{i}", "body": body} for i, body in enumerate(bodies)]
    http.post(f"/batches/{batch['id']}/requests", json={"requests": requests}).raise_for_status()
    http.post(f"/batches/{batch['id']}/start").raise_for_status()
    wait_for(http, batch["id"], timeout=timeout)
    results = http.get(f"/batches/{batch['id']}/results", params={"limit": 1000}).json()["data"]
    return sorted(results, key=lambda r: int(r["custom_id"][1:]))


def _content(result: dict[str, Any]) -> str:
    assert result["status"] == "completed", result
    return result["response"]["choices"][0]["message"]["content"]


def test_answers_with_the_models_own_tokens_and_parameters(http, tokenizer) -> None:
    text = "Name one colour of the sky. Answer in one word."
    long_text = "Say hello. " * 20
    results = _run(
        http,
        [
            chat(text, MODEL, temperature=0, max_tokens=12),
            chat(text, MODEL, temperature=0, max_tokens=12),  # greedy: the same answer
            chat(long_text, MODEL, temperature=0, max_tokens=3),
            chat(text, MODEL, temperature=0.8, top_p=0.9, seed=7, max_tokens=12),
            chat(text, MODEL, temperature=0.8, top_p=0.9, seed=7, max_tokens=12),
        ],
    )
    first, again, cut, sampled, resampled = results
    assert _content(first) == _content(again)
    assert _content(sampled) == _content(resampled)  # the same seed, the same sample
    response = first["response"]
    assert response["model"] == MODEL
    assert response["served_by"] == {
        "backend": "llama",
        "model_file": "SmolLM2-135M-Instruct.Q4_1.gguf",
    }
    # the model's tokenizer counts: the prompt grows by exactly the tokens of the longer text
    usage, cut_usage = response["usage"], cut["response"]["usage"]
    extra = len(tokenizer.tokenize(long_text.encode(), add_bos=False, special=False))
    shorter = len(tokenizer.tokenize(text.encode(), add_bos=False, special=False))
    assert cut_usage["prompt_tokens"] - usage["prompt_tokens"] == extra - shorter
    assert (
        usage["completion_tokens"]
        == len(tokenizer.tokenize(_content(first).encode(), add_bos=False, special=False))
        or response["choices"][0]["finish_reason"] == "length"
    )
    assert cut_usage["completion_tokens"] == 3
    assert cut["response"]["choices"][0]["finish_reason"] == "length"


def test_stop_sequences_end_the_answer(http) -> None:
    prompt = "Count from 1 to 20, separated by commas."
    free, stopped = _run(
        http,
        [
            chat(prompt, MODEL, temperature=0, max_tokens=40),
            chat(prompt, MODEL, temperature=0, max_tokens=40, stop=["5"]),
        ],
    )
    whole = _content(free)
    assert "5" in whole
    assert _content(stopped) == whole[: whole.index("5")]
    assert stopped["response"]["choices"][0]["finish_reason"] == "stop"


SCHEMA = {
    "type": "object",
    "properties": {
        "product": {"type": "string"},
        "stars": {"type": "integer", "minimum": 1, "maximum": 5},
        "recommend": {"type": "boolean"},
    },
    "required": ["product", "stars", "recommend"],
}


def test_response_format_constrains_the_answer_to_json(http) -> None:
    review = "Review: The Aeropress coffee maker is great, five stars, buy it."
    ask = f"Extract the product, its stars and whether it is recommended.\n\n{review}"
    schema, any_json, llama_style = _run(
        http,
        [
            chat(
                ask,
                MODEL,
                temperature=0,
                max_tokens=60,
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "review", "schema": SCHEMA, "strict": True},
                },
            ),
            chat(
                'Reply with a JSON object whose key "answer" is "yes".',
                MODEL,
                temperature=0,
                max_tokens=40,
                response_format={"type": "json_object"},
            ),
            chat(
                ask,
                MODEL,
                temperature=0,
                max_tokens=60,
                response_format={"type": "json_object", "schema": SCHEMA},  # llama.cpp's form
            ),
        ],
    )
    for result in (schema, llama_style):
        data = orjson.loads(_content(result))
        assert set(data) == {"product", "stars", "recommend"}
        assert isinstance(data["product"], str)
        assert isinstance(data["stars"], int) and 1 <= data["stars"] <= 5
        assert isinstance(data["recommend"], bool)
    assert orjson.loads(_content(any_json)) == {"answer": "yes"}


def test_a_prompt_over_the_context_window_fails_alone(http) -> None:
    huge = "word " * 3000  # over the 2,048-token window
    results = _run(
        http,
        [
            chat("Say yes.", MODEL, temperature=0, max_tokens=4),
            chat(huge, MODEL, max_tokens=4),
            chat("Say no.", MODEL, temperature=0, max_tokens=4),
            chat("Say no.", "x", max_tokens=4, logprobs=True),
        ],
    )
    ok, too_long, after, unsupported = results
    assert ok["status"] == after["status"] == "completed"  # the worker goes on
    assert too_long["status"] == "failed"
    error = too_long["error"]
    assert error["type"] == "context_length_exceeded"
    assert "context window is 2048 tokens" in error["message"]
    assert "Shorten the prompt" in error["message"]
    assert unsupported["status"] == "failed"
    assert unsupported["error"]["type"] == "invalid_request"
    assert "logprobs" in unsupported["error"]["message"]


def test_cancel_stops_the_requests_in_flight(http, tokenizer) -> None:
    eos = tokenizer.token_eos()
    body = chat(
        "Tell a very long story about a lighthouse.",
        MODEL,
        max_tokens=60,
        temperature=0.7,
        seed=1,
        logit_bias={str(eos): -100},  # never ends early: each answer is 60 tokens
    )
    rows = 24
    batch = new_batch(http, name="llama-cancel")
    requests = [{"custom_id": f"r{i}", "body": body} for i in range(rows)]
    http.post(f"/batches/{batch['id']}/requests", json={"requests": requests}).raise_for_status()
    http.post(f"/batches/{batch['id']}/start").raise_for_status()
    wait_for(http, batch["id"], lambda b: b["completed_count"] > 0, timeout=300)
    http.post(f"/batches/{batch['id']}/cancel").raise_for_status()
    ended = wait_for(http, batch["id"], timeout=60)
    assert ended["status"] == "cancelled"
    completed, cancelled = ended["completed_count"], ended["cancelled_count"]
    assert completed + cancelled == rows
    # the worker hands the pool a chunk of 4 x processes requests and keeps one more in
    # flight: had the cancel waited for the chunks in flight, two chunks would be answered
    chunk = 4 * pool_shape(LlamaSettings()).processes
    assert completed < 2 * chunk
    # and the pool is free at once: the next batch is answered
    (quick,) = _run(http, [chat("Say yes.", MODEL, temperature=0, max_tokens=2)])
    assert quick["status"] == "completed"
