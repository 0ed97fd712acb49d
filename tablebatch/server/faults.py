"""HTTP fault injection: an ASGI middleware driven by ``FaultSettings``.

It sits in front of the API routes (paths under ``/v1/``, and under each
dialect's ``/<dialect>/v1/``, answered in the dialect's error shape) and, by a seeded
random draw per call, answers 429 (with ``Retry-After``), 500 or 503 before the
call takes effect, adds latency, or lets a POST take effect and then answers
500, so that the client cannot know the outcome. The same seed and the same
sequence of calls give the same faults. ``disconnect_rate`` drops the connection
half-way through an answer, after the call took effect.
"""

from __future__ import annotations

import asyncio
import random
import threading
from typing import Any

import orjson

from tablebatch.server.dialects import error_payload, is_api_path
from tablebatch.server.settings import FaultSettings

Scope = dict[str, Any]


def _error(
    path: str, status: int, kind: str, message: str, headers: list[tuple[bytes, bytes]]
) -> tuple:
    body = orjson.dumps(error_payload(path, status, kind, message))
    head = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    return status, head, body


class FaultInjector:
    """Wraps an ASGI app and injects the faults its settings ask for."""

    def __init__(self, app: Any, faults: FaultSettings) -> None:
        self.app = app
        self.faults = faults
        self._rng = random.Random(faults.seed)
        self._lock = threading.Lock()

    def _draw(self) -> tuple[float, float, float]:
        with self._lock:
            return self._rng.random(), self._rng.random(), self._rng.random()

    def _pre_effect(self, draw: float, path: str) -> tuple | None:
        f = self.faults
        retry = f"{f.retry_after_s:g}"
        if draw < f.rate_limit_rate:
            return _error(
                path,
                429,
                "rate_limit_error",
                f"Too many requests (injected fault); retry after {retry} s.",
                [(b"retry-after", retry.encode())],
            )
        draw -= f.rate_limit_rate
        if draw < f.server_error_rate:
            return _error(path, 500, "server_error", "Internal server error (injected fault).", [])
        draw -= f.server_error_rate
        if draw < f.unavailable_rate:
            return _error(
                path,
                503,
                "overloaded_error",
                "The server is overloaded (injected fault); retry later.",
                [(b"retry-after", retry.encode())],
            )
        return None

    async def _disconnect(self, scope: Scope, receive: Any, send: Any) -> None:
        """Let the call take effect, then send half of its answer and drop the connection."""
        messages: list[dict[str, Any]] = []

        async def keep(message: dict[str, Any]) -> None:
            messages.append(message)

        await self.app(scope, receive, keep)
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
        start = next(m for m in messages if m["type"] == "http.response.start")
        await send(start)
        await send(
            {"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True}
        )
        raise ConnectionAbortedError("connection dropped mid-answer (injected fault)")

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not is_api_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        if self.faults.latency_s:
            await asyncio.sleep(self.faults.latency_s)
        first, second, third = self._draw()
        answer = self._pre_effect(first, scope["path"])
        if answer is None and third < self.faults.disconnect_rate:
            await self._disconnect(scope, receive, send)
            return
        if (
            answer is None
            and scope["method"] == "POST"
            and second < self.faults.post_commit_error_rate
        ):

            async def discard(message: dict[str, Any]) -> None:
                return None

            await self.app(scope, receive, discard)
            answer = _error(
                scope["path"],
                500,
                "server_error",
                "Internal server error after the call was processed (injected fault).",
                [],
            )
        if answer is None:
            await self.app(scope, receive, send)
            return
        status, headers, body = answer
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
