"""What the dialects share: their registry entry, the server's parts, key checks, JSON.

A dialect is a FastAPI router mounted under its own prefix, over the same store,
worker and backend as the seed API. Its routes reach those through
``server(request)``; its errors are rendered in its own shape by ``error_body``
(the app's exception handlers and the fault injector ask the registry which
dialect a path belongs to).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from tablebatch.server.errors import InvalidRequest
from tablebatch.server.settings import ServerSettings
from tablebatch.server.store import Store, StoredBatch
from tablebatch.server.worker import Worker

JSON = "application/json"
WINDOW_S = 24 * 3600  # the providers' batch window (the default of ``batch_window_s``)

ErrorBody = Callable[[int, str, str, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Dialect:
    """A provider's batch API as the local server speaks it."""

    name: str
    prefix: str  # its routes live under it: "/openai" serves "/openai/v1/batches"
    sdk_path: str  # what the provider's SDK takes as base URL, after the server's root
    router: APIRouter
    error_body: ErrorBody  # (status, seed error type, message, details) -> the JSON body


@dataclass(frozen=True)
class Server:
    """The parts of the running server a dialect's route works with."""

    store: Store
    worker: Worker
    settings: ServerSettings


def server(request: Request) -> Server:
    """The store, worker and settings of the app serving ``request``."""
    state = request.app.state
    return Server(state.store, state.worker, state.settings)


def keys_required(request: Request) -> bool:
    """Whether the server checks API keys (it names some)."""
    return bool(request.app.state.settings.api_keys)


def caller_of(request: Request, token: str) -> str | None:
    """A name for the holder of ``token`` that holds no secret, or None for a wrong key."""
    if not keys_required(request):
        return "anonymous"
    token_bytes = token.strip().encode()
    if not token_bytes:
        return None
    keys = request.app.state.settings.api_keys
    if any(hmac.compare_digest(token_bytes, k.get_secret_value().encode()) for k in keys):
        return hashlib.sha256(token_bytes).hexdigest()[:16]
    return None


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def json_response(data: Any, status_code: int = 200) -> Response:
    """A JSON answer encoded with orjson."""
    return Response(orjson.dumps(data), status_code, media_type=JSON)


def expires_at(batch: StoredBatch) -> float:
    """When a dialect batch expires (epoch seconds): its window after its creation."""
    return float(batch.info.get("expires_at", batch.created_at + WINDOW_S))


def rfc3339(ts: float | None) -> str | None:
    """Epoch seconds as an RFC 3339 UTC time with microseconds (``…T10:00:00.123456Z``)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_object(raw: bytes, shape: str) -> dict[str, Any]:
    """A JSON object body, or InvalidRequest saying what to send (``shape``)."""
    try:
        data = orjson.loads(raw or b"null")
    except orjson.JSONDecodeError:
        raise InvalidRequest(f"The body is not valid JSON; send {shape}.") from None
    if not isinstance(data, dict):
        raise InvalidRequest(f"The body must be a JSON object: {shape}.")
    return data
