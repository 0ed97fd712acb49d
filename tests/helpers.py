"""Helpers for tests against the local Batch API server."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

TERMINAL = ("completed", "failed", "cancelled")


def chat(text: str, model: str = "grok-4", **params: Any) -> dict[str, Any]:
    """A chat-completions body asking ``text``."""
    return {"model": model, "messages": [{"role": "user", "content": text}], **params}


def make_requests(n: int, prefix: str = "r", start: int = 0) -> list[dict[str, Any]]:
    """``n`` classification requests with custom_ids ``prefix-<i>``."""
    return [
        {
            "custom_id": f"{prefix}-{i}",
            "body": chat(f"Is this review positive or negative?\n\nReview number {i} is great."),
        }
        for i in range(start, start + n)
    ]


def new_batch(http: httpx.Client, name: str = "test", n: int = 0, **fields: Any) -> dict[str, Any]:
    """Create a batch (and add ``n`` requests); returns the batch object."""
    response = http.post("/batches", json={"name": name, "model": "grok-4", **fields})
    response.raise_for_status()
    batch = response.json()
    if n:
        response = http.post(
            f"/batches/{batch['id']}/requests", json={"requests": make_requests(n)}
        )
        response.raise_for_status()
        batch = response.json()
    return batch


def wait_for(
    http: httpx.Client,
    batch_id: str,
    predicate: Callable[[dict[str, Any]], bool] = lambda b: b["status"] in TERMINAL,
    timeout: float = 20.0,
) -> dict[str, Any]:
    """Poll a batch until ``predicate`` holds (by default: a terminal status)."""
    deadline = time.monotonic() + timeout
    while True:
        batch = http.get(f"/batches/{batch_id}").raise_for_status().json()
        if predicate(batch):
            return batch
        if time.monotonic() > deadline:
            raise AssertionError(f"batch did not get there in {timeout}s: {batch}")
        time.sleep(0.01)


def walk(http: httpx.Client, path: str, limit: int, **params: Any) -> list[dict[str, Any]]:
    """Every item of a list endpoint, page by page, following ``after``."""
    items: list[dict[str, Any]] = []
    after = None
    while True:
        query = {"limit": limit, **params, **({"after": after} if after else {})}
        page = http.get(path, params=query).raise_for_status().json()
        assert page["object"] == "list"
        assert len(page["data"]) <= limit
        items += page["data"]
        if not page["has_more"]:
            return items
        assert page["data"], "has_more with an empty page"
        after = page["data"][-1]["id"]


class StatusRecorder:
    """An ASGI wrapper that notes ``(method, path, status)`` of every answer of an app, so a
    test can see the faults a client met and retried through."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.state = app.state
        self.seen: list[tuple[str, str, int]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def note(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.seen.append((scope["method"], scope["path"], message["status"]))
            await send(message)

        await self.app(scope, receive, note if scope["type"] == "http" else send)

    def statuses(self, prefix: str) -> list[int]:
        """Statuses answered on paths under ``prefix``, in order."""
        return [status for _, path, status in self.seen if path.startswith(prefix)]
