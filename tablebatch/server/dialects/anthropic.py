"""The Anthropic Message Batches dialect, under ``/anthropic``, as api.anthropic.com has it.

The shapes are those of the official SDK's types (``anthropic/types/messages/
message_batch*.py``): ``POST /v1/messages/batches {requests: [{custom_id,
params}]}`` creates and starts a batch; ``processing_status`` is
``in_progress`` → ``canceling`` → ``ended``; ``request_counts`` count every
request as ``processing`` until the batch ends, as Anthropic's do; once it
ends, ``results_url`` serves JSONL lines ``{custom_id, result: {type:
succeeded, message} | {type: errored, error} | {type: canceled} | {type:
expired}}``.

Messages ``params`` (model, max_tokens, messages, system, temperature, top_p,
stop_sequences) are turned into the chat-completions body the backends take
(``anthropic_messages.py``), and a backend's chat completion back into a Messages
``message``. As at Anthropic, ``params`` are checked when the request is processed:
a request the local server cannot take ends ``errored`` with an
``invalid_request_error``, while a bad ``custom_id`` refuses the whole call.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse

from tablebatch.server.dialects.anthropic_messages import result_line, to_chat
from tablebatch.server.dialects.common import (
    Dialect,
    bearer_token,
    caller_of,
    expires_at,
    json_response,
    keys_required,
    parse_object,
    rfc3339,
    server,
)
from tablebatch.server.errors import (
    AuthenticationFailed,
    Conflict,
    InvalidRequest,
    PayloadTooLarge,
)
from tablebatch.server.idempotency import idempotent_post
from tablebatch.server.openapi import CURSOR
from tablebatch.server.store import TERMINAL, StoredBatch

NAME = "anthropic"
ENDPOINT = "/v1/messages"
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

router = APIRouter(tags=["Anthropic dialect"])

PROCESSING = {"cancelling": "canceling"}  # otherwise: terminal → ended, the rest in_progress
ERROR_TYPES = {  # the Anthropic error type of an HTTP status
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def error_body(status: int, kind: str, message: str, details: dict[str, Any]) -> dict[str, Any]:
    """An error in Anthropic's shape: ``{"type": "error", "error": {"type", "message"}}``."""
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def caller(request: Request) -> str:
    """Checks ``x-api-key`` (or ``Authorization: Bearer``, which the SDK may send) and the
    ``anthropic-version`` header; returns a name of the caller that holds no secret."""
    if keys_required(request):
        token = request.headers.get("x-api-key") or bearer_token(request)
        if not token:
            raise AuthenticationFailed("x-api-key header is required")
        who = caller_of(request, token)
        if who is None:
            raise AuthenticationFailed("invalid x-api-key")
    else:
        who = "anonymous"
    if not request.headers.get("anthropic-version"):
        raise InvalidRequest("anthropic-version: header is required")
    return who


# -- batches ---------------------------------------------------------------------------


def batch_object(batch: StoredBatch, root: str) -> dict[str, Any]:
    """The MessageBatch object of the API (``root``: the server's URL, for ``results_url``)."""
    ended = batch.status in TERMINAL
    status = "ended" if ended else PROCESSING.get(batch.status, "in_progress")
    expired = batch.info.get("expired_count", 0)
    counts = {
        "processing": 0 if ended else batch.request_count,
        "succeeded": batch.completed_count if ended else 0,
        "errored": batch.failed_count if ended else 0,
        "canceled": batch.cancelled_count - expired if ended else 0,
        "expired": expired if ended else 0,
    }
    results_url = f"{root}/anthropic/v1/messages/batches/{batch.id}/results"
    return {
        "id": batch.id,
        "type": "message_batch",
        "processing_status": status,
        "request_counts": counts,
        "created_at": rfc3339(batch.created_at),
        "expires_at": rfc3339(expires_at(batch)),
        "ended_at": rfc3339(batch.ended_at) if ended else None,
        "cancel_initiated_at": rfc3339(batch.cancel_requested_at),
        "archived_at": None,
        "results_url": results_url if ended else None,
    }


def _root(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _parse_create(raw: bytes, max_requests: int) -> list[tuple[str, Any]]:
    """``(custom_id, params)`` of a create call; a bad custom_id refuses the whole call."""
    shape = '{"requests": [{"custom_id": "...", "params": {...}}, ...]}'
    data = parse_object(raw, shape)
    requests = data.get("requests")
    if not isinstance(requests, list) or not requests:
        raise InvalidRequest(f"requests: Field required (a non-empty list); send {shape}.")
    if len(requests) > max_requests:
        raise InvalidRequest(
            f"requests: {len(requests)} requests; a message batch takes at most {max_requests}. "
            "Split them into several batches."
        )
    problems: list[str] = []
    seen: dict[str, int] = {}
    parsed: list[tuple[str, Any]] = []
    for i, item in enumerate(requests):
        if not isinstance(item, dict) or "params" not in item:
            problems.append(f"requests.{i}: must be an object with custom_id and params")
            continue
        extra = sorted(set(item) - {"custom_id", "params"})
        custom_id = item.get("custom_id")
        if extra:
            problems.append(f"requests.{i}.{extra[0]}: Extra inputs are not permitted")
        elif not isinstance(custom_id, str) or not CUSTOM_ID.fullmatch(custom_id):
            problems.append(
                f"requests.{i}.custom_id: String should match pattern '{CUSTOM_ID.pattern}'"
            )
        elif custom_id in seen:
            problems.append(
                f"requests.{i}.custom_id: {custom_id!r} repeats requests.{seen[custom_id]}; "
                "custom_id values must be unique within a batch"
            )
        else:
            seen[custom_id] = i
            parsed.append((custom_id, item["params"]))
    if problems:
        more = f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise InvalidRequest("; ".join(problems[:10]) + more)
    return parsed


@router.post("/v1/messages/batches", summary="Create a Message Batch")
async def create_batch(request: Request, who: str = Depends(caller)) -> Response:
    """Create a batch of Messages requests; it starts at once."""
    srv = server(request)
    limits = srv.settings.dialect_limits

    def op(parsed: list[tuple[str, Any]]) -> tuple[int, bytes]:
        items: list[tuple[str, bytes]] = []
        rejected: dict[str, dict[str, str]] = {}
        for custom_id, params in parsed:
            body, problem = to_chat(params)
            if problem is not None:
                rejected[custom_id] = {"type": "invalid_request_error", "message": problem}
            items.append((custom_id, orjson.dumps(body if body is not None else params)))
        batch_id = "msgbatch_" + secrets.token_hex(12)
        with srv.store.transaction():  # a crash leaves no batch that never starts
            srv.store.create_batch(
                batch_id,
                None,
                None,
                ENDPOINT,
                dialect=NAME,
                batch_id=batch_id,
                expires_in=limits.batch_window_s,
            )
            srv.store.add_requests(batch_id, items, dialect=NAME, rejected=rejected)
            batch = srv.store.start(batch_id, NAME)
        srv.worker.wake()
        return 200, orjson.dumps(batch_object(batch, _root(request)))

    def parse(raw: bytes) -> list[tuple[str, Any]]:
        if len(raw) > limits.anthropic_max_bytes:
            raise PayloadTooLarge(
                f"This call has {len(raw)} bytes; a message batch may have "
                f"{limits.anthropic_max_bytes}. Split the requests into several batches."
            )
        return _parse_create(raw, limits.anthropic_max_requests)

    return await idempotent_post(
        request,
        srv.store,
        who,
        op,
        parse,
        max_bytes=limits.anthropic_max_bytes,
        scope=NAME + ":",
    )


@router.get("/v1/messages/batches", summary="List Message Batches, newest first")
def list_batches(
    request: Request,
    before_id: str | None = Query(
        None, description="The page just newer than this batch.", json_schema_extra=CURSOR
    ),
    after_id: str | None = Query(
        None, description="The page just older than this batch.", json_schema_extra=CURSOR
    ),
    limit: int = Query(20, ge=1, le=1000, description="Batches per page (1 to 1000)."),
    who: str = Depends(caller),
) -> Response:
    """A page of batches: ``{data, has_more, first_id, last_id}``."""
    if before_id and after_id:
        raise InvalidRequest("Pass before_id or after_id, not both.")
    store = server(request).store
    batches, more = store.list_batches(limit, after_id, None, None, dialect=NAME, before=before_id)
    data = [batch_object(b, _root(request)) for b in batches]
    return json_response(
        {
            "data": data,
            "has_more": more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


@router.get("/v1/messages/batches/{message_batch_id}", summary="Retrieve a Message Batch")
def get_batch(request: Request, message_batch_id: str, who: str = Depends(caller)) -> Response:
    """The batch; ``results_url`` is set once it has ended."""
    batch = server(request).store.get_batch(message_batch_id, NAME)
    return json_response(batch_object(batch, _root(request)))


@router.get(
    "/v1/messages/batches/{message_batch_id}/results",
    summary="Retrieve Message Batch results (JSONL)",
)
def results(request: Request, message_batch_id: str, who: str = Depends(caller)) -> Response:
    """Every request's result, one JSON line each, once the batch has ended."""
    store = server(request).store
    batch = store.get_batch(message_batch_id, NAME)
    if batch.status not in TERMINAL:
        raise InvalidRequest(
            f"Message Batch {batch.id} has not ended yet; its results are available once "
            "processing_status is 'ended'."
        )

    def lines() -> Iterator[bytes]:
        for rows in store.iter_outcomes(batch.id, NAME):
            yield b"".join(result_line(c, s, r) + b"\n" for _, c, s, r in rows)

    return StreamingResponse(lines(), media_type="application/x-jsonl")


@router.post("/v1/messages/batches/{message_batch_id}/cancel", summary="Cancel a Message Batch")
async def cancel_batch(
    request: Request, message_batch_id: str, who: str = Depends(caller)
) -> Response:
    """Ask to cancel: the batch is ``canceling``, then ``ended`` with canceled requests."""
    srv = server(request)

    def op(raw: bytes) -> tuple[int, bytes]:
        try:
            batch = srv.store.cancel(message_batch_id, NAME)
        except Conflict:
            raise InvalidRequest(
                f"Message Batch {message_batch_id} has already ended: there is nothing to cancel."
            ) from None
        srv.worker.wake()
        return 200, orjson.dumps(batch_object(batch, _root(request)))

    max_bytes = srv.settings.limits.max_bytes_per_call
    return await idempotent_post(request, srv.store, who, op, max_bytes=max_bytes, scope=NAME + ":")


DIALECT = Dialect(NAME, "/anthropic", "/anthropic", router, error_body)
