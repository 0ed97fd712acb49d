"""The ``openai`` backend: forward each request to an OpenAI-compatible server.

Any server with ``POST <url>/chat/completions`` will do (vLLM, llama.cpp,
Ollama, a hosted API), which makes the local server a batch front end for a
self-hosted model. Requests of a chunk go out with bounded concurrency;
connection errors, timeouts, 408, 429 and 5xx are retried with capped
exponential backoff (``Retry-After`` honoured up to a cap). Whatever still
fails becomes that request's ``error``; the batch goes on.

Structured output goes up as the request gives it (OpenAI's ``json_schema``), or, with
``schema_as="json_object"``, as ``{"type": "json_object", "schema": …}``: the one form
llama-cpp-python's server takes (it answers 500 to ``json_schema``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import httpx
import orjson
from pydantic import ValidationError

from tablebatch.api.models import ChatCompletion
from tablebatch.server.store import Outcome

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 30.0


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _upstream_message(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:500]
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"][:500]
    if isinstance(error, str):
        return error[:500]
    return response.text[:500]


def schema_as_json_object(body: bytes) -> bytes:
    """``body`` with an OpenAI ``json_schema`` response_format rewritten as llama.cpp's
    ``{"type": "json_object", "schema": …}`` (any other body unchanged)."""
    if b"json_schema" not in body:
        return body
    data = orjson.loads(body)
    form = data.get("response_format") if isinstance(data, dict) else None
    if not isinstance(form, dict) or form.get("type") != "json_schema":
        return body
    spec = form.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    data["response_format"] = {"type": "json_object", **({"schema": schema} if schema else {})}
    return orjson.dumps(data)


class OpenAICompatBackend:
    """Sends each request body to ``<base_url>/chat/completions``."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 3,
        schema_as: Literal["json_schema", "json_object"] = "json_schema",
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"content-type": "application/json"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=timeout_s,
            transport=transport,
            limits=httpx.Limits(max_connections=concurrency),
        )
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="tablebatch-upstream")
        self._max_retries = max_retries
        self._schema_as = schema_as
        self._sleep = sleep
        self.concurrency = concurrency

    def close(self) -> None:
        """Stop the threads and close the connections."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()

    def complete(self, rows: list[tuple[int, str, bytes]]) -> list[Outcome]:
        """Answer a chunk of requests ``(n, custom_id, body)``, in parallel."""
        return list(self._pool.map(lambda row: self._one(*row), rows))

    def _one(self, n: int, custom_id: str, body: bytes) -> Outcome:
        try:
            return self._call(n, custom_id, body)
        except Exception as exc:  # one bad answer must not fail the rest of the chunk
            return Outcome(
                n,
                custom_id,
                error={
                    "type": "upstream_error",
                    "message": f"The model server's answer could not be used: "
                    f"{type(exc).__name__}.",
                },
            )

    def _call(self, n: int, custom_id: str, body: bytes) -> Outcome:
        if self._schema_as == "json_object":
            body = schema_as_json_object(body)
        attempt = 0
        while True:
            delay: float | None = None
            try:
                response = self._client.post("/chat/completions", content=body)
            except httpx.HTTPError as exc:
                failure = {
                    "type": "upstream_unreachable",
                    "message": f"The model server could not be reached: {type(exc).__name__}.",
                }
            else:
                if response.status_code < 300:
                    return self._parse(n, custom_id, response)
                failure = {
                    "type": "upstream_error",
                    "message": f"The model server answered {response.status_code}: "
                    f"{_upstream_message(response)}",
                }
                if response.status_code not in RETRYABLE_STATUS:
                    return Outcome(n, custom_id, error=failure)
                delay = _retry_after(response)
            if attempt >= self._max_retries:
                return Outcome(n, custom_id, error=failure)
            if delay is None:
                delay = min(0.5 * 2**attempt, 8.0)
            self._sleep(min(delay, MAX_RETRY_AFTER_S))
            attempt += 1

    @staticmethod
    def _parse(n: int, custom_id: str, response: httpx.Response) -> Outcome:
        try:
            data: Any = orjson.loads(response.content)
            ChatCompletion.model_validate(data)
        except (orjson.JSONDecodeError, ValidationError):
            data = None
        if not isinstance(data, dict) or not data.get("choices"):
            return Outcome(
                n,
                custom_id,
                error={
                    "type": "upstream_invalid_response",
                    "message": "The model server's answer is not a chat completion.",
                },
            )
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        prompt = usage.get("prompt_tokens")
        completion = usage.get("completion_tokens")
        return Outcome(
            n,
            custom_id,
            response=data,
            prompt_tokens=prompt if isinstance(prompt, int) else 0,
            completion_tokens=completion if isinstance(completion, int) else 0,
        )
