"""The xAI batch dialect, under ``/xai``: the REST batches of api.x.ai.

The messages are those of ``xai-org/xai-proto`` (``batch.proto``: ``Batch``,
``BatchState``, ``BatchRequestMetadata``, ``BatchResult``), in the JSON the REST
API speaks: snake_case field names (``batch_id``, ``num_pending``,
``pagination_token``), counts as numbers, times as RFC 3339 strings, fields
that are not set left out, and the REST wrappers ``batch_request:
{chat_get_completion}`` and ``batch_result: {response: {chat_get_completion}} |
{error}`` around the chat request and response.

There is no status string and no start: adding requests starts the work (a
batch takes requests until it is cancelled), and a batch is done when
``state.num_pending`` is 0. Cancel is ``POST /v1/batches/{id}:cancel``. Pages
are ``limit`` plus an opaque ``pagination_token``, absent on the last page.
Errors are ``{"code": <gRPC status text>, "error": <message>}``, as xAI's; a
wrong key is a 400, as at xAI.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.convertors import StringConvertor, register_url_convertor

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
from tablebatch.server.dialects.xai_add import parse_add
from tablebatch.server.errors import (
    AuthenticationFailed,
    Conflict,
    InvalidRequest,
)
from tablebatch.server.idempotency import idempotent_post
from tablebatch.server.store import StoredBatch

NAME = "xai"
ENDPOINT = "/v1/chat/completions"
PAGE_DEFAULT = 100  # the proto's default page size

router = APIRouter(tags=["xAI dialect"])


class _BatchIdConvertor(StringConvertor):
    """A batch id in a path has no ``:``, so ``/v1/batches/{id}:cancel`` is only the cancel
    verb's URL (as in xAI's gRPC transcoding), not also that of a batch ``…:cancel``."""

    regex = "[^/:]+"


register_url_convertor("xai_batch_id", _BatchIdConvertor())

GRPC_TEXT = {  # gRPC status → the text xAI's REST errors carry as "code"
    "invalid_argument": "Client specified an invalid argument",
    "unauthenticated": "The request does not have valid authentication credentials",
    "permission_denied": "The caller does not have permission to execute the specified operation",
    "not_found": "Some requested entity was not found",
    "already_exists": "Some entity that we attempted to create already exists",
    "failed_precondition": "The system is not in a state required for the operation's execution",
    "resource_exhausted": "Some resource has been exhausted",
    "internal": "Internal error",
    "unavailable": "The service is currently unavailable",
}
GRPC_OF_STATUS = {
    400: "invalid_argument",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    409: "already_exists",
    413: "resource_exhausted",
    422: "invalid_argument",
    429: "resource_exhausted",
    503: "unavailable",
}
RESULT_CODES = {  # google.rpc.Status code of a failed request, by the store's error type
    "invalid_request_error": 3,  # INVALID_ARGUMENT
    "model_not_found": 5,  # NOT_FOUND
    "rate_limit_error": 8,  # RESOURCE_EXHAUSTED
}
STATES = {
    "pending": "STATE_PENDING",
    "completed": "STATE_SUCCEEDED",
    "failed": "STATE_FAILED",
    "cancelled": "STATE_CANCELLED",
    "expired": "STATE_CANCELLED",  # xAI has no expired state: it stops what is pending
}


def error_body(status: int, kind: str, message: str, details: dict[str, Any]) -> dict[str, Any]:
    """An error in xAI's shape: ``{"code": <gRPC status text>, "error": <message>}``."""
    grpc = details.get("grpc") or GRPC_OF_STATUS.get(status, "internal")
    return {"code": GRPC_TEXT[grpc], "error": message}


def caller(request: Request) -> str:
    """Checks ``Authorization: Bearer <key>``; returns a name of the caller (no secret)."""
    if not keys_required(request):
        return "anonymous"
    token = bearer_token(request)
    if token is None:
        raise AuthenticationFailed(
            "No API key provided: send the header 'Authorization: Bearer <xAI API key>'."
        )
    who = caller_of(request, token)
    if who is None:  # xAI answers a wrong key with a 400
        raise InvalidRequest("Incorrect API key provided. Check the key the client sends.")
    return who


def _token(cursor: str) -> str:
    return base64.urlsafe_b64encode(cursor.encode()).decode().rstrip("=")


BAD_TOKEN = (
    "pagination_token: not a token of this server for this list; pass the pagination_token "
    "of the previous page."
)


def _cursor(token: str | None) -> str | None:
    """The cursor inside a pagination token this server gave, or InvalidRequest."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        return base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidRequest(BAD_TOKEN) from None


@contextmanager
def _token_errors() -> Iterator[None]:
    """Say what is wrong in terms of the token when the store refuses its cursor."""
    try:
        yield
    except InvalidRequest:
        raise InvalidRequest(BAD_TOKEN) from None


def _page(key: str, items: list[Any], more: bool, last: str | None) -> dict[str, Any]:
    page: dict[str, Any] = {key: items}
    if more and last is not None:
        page["pagination_token"] = _token(last)
    return page


def batch_object(batch: StoredBatch) -> dict[str, Any]:
    """The Batch message, as REST JSON."""
    info = batch.info
    obj: dict[str, Any] = {
        "batch_id": batch.id,
        "name": batch.name,
        "create_time": rfc3339(batch.created_at),
        "expire_time": rfc3339(expires_at(batch)),
        "create_api_key_id": info.get("api_key_id", ""),
        "state": {
            "num_requests": batch.request_count,
            "num_pending": batch.pending_count,
            "num_success": batch.completed_count,
            "num_error": batch.failed_count,
            "num_cancelled": batch.cancelled_count,
        },
        "cost_breakdown": {"total_cost_usd_ticks": 0, "endpoint_costs": []},
    }
    if batch.cancel_requested_at is not None:
        obj["cancel_time"] = rfc3339(batch.cancel_requested_at)
    if batch.status == "failed" and batch.error:  # the server gave up on it: xAI cancels
        obj["cancel_time"] = rfc3339(batch.ended_at)
        obj["cancel_by_xai_message"] = orjson.loads(batch.error).get("message", "")
    return obj


def result_object(result: bytes) -> dict[str, Any]:
    """A BatchResult, as REST JSON, from a stored result."""
    stored = orjson.loads(result)
    if stored["status"] == "completed":
        outcome: dict[str, Any] = {"response": {"chat_get_completion": stored["response"]}}
    else:
        error = stored["error"]
        code = RESULT_CODES.get(error.get("type"), 13)  # INTERNAL
        outcome = {"error": {"code": code, "message": error["message"]}}
    return {"batch_request_id": stored["custom_id"], "batch_result": outcome}


# -- routes ----------------------------------------------------------------------------


@router.post("/v1/batches", summary="Create a batch")
async def create_batch(request: Request, who: str = Depends(caller)) -> Response:
    """Create an empty batch; requests added to it are processed at once."""
    srv = server(request)

    def parse(raw: bytes) -> str:
        data = parse_object(raw, '{"name": "..."}')
        if "input_file_id" in data:
            raise InvalidRequest(
                "input_file_id: batches from files are not supported by the local server; "
                "add requests with POST /v1/batches/{batch_id}/requests."
            )
        unknown = sorted(set(data) - {"name"})
        if unknown:
            raise InvalidRequest(f'Unknown field {unknown[0]!r}; send {{"name": "..."}}.')
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest('name: a batch needs a name; send {"name": "..."}.')
        return name

    def op(name: str) -> tuple[int, bytes]:
        batch = srv.store.create_batch(
            name,
            None,
            None,
            ENDPOINT,
            dialect=NAME,
            batch_id="batch_" + str(uuid.uuid4()),
            meta={"api_key_id": who},
            expires_in=srv.settings.dialect_limits.batch_window_s,
        )
        return 200, orjson.dumps(batch_object(batch))

    max_bytes = srv.settings.limits.max_bytes_per_call
    return await idempotent_post(
        request, srv.store, who, op, parse, max_bytes=max_bytes, scope=NAME + ":"
    )


@router.get("/v1/batches", summary="List batches, newest first")
def list_batches(
    request: Request,
    limit: int = Query(PAGE_DEFAULT, ge=1, le=10_000, description="Batches per page."),
    pagination_token: str | None = Query(None, description="The previous page's token."),
    who: str = Depends(caller),
) -> Response:
    """A page of batches: ``{batches, pagination_token}`` (no token on the last page)."""
    after = _cursor(pagination_token)
    with _token_errors():
        batches, more = server(request).store.list_batches(limit, after, None, None, dialect=NAME)
    last = batches[-1].id if batches else None
    return json_response(_page("batches", [batch_object(b) for b in batches], more, last))


@router.get("/v1/batches/{batch_id:xai_batch_id}", summary="Get a batch")
def get_batch(request: Request, batch_id: str, who: str = Depends(caller)) -> Response:
    """The batch and its ``state``; it is done when ``state.num_pending`` is 0."""
    return json_response(batch_object(server(request).store.get_batch(batch_id, NAME)))


@router.post("/v1/batches/{batch_id}/requests", summary="Add requests (processing starts)")
async def add_requests(request: Request, batch_id: str, who: str = Depends(caller)) -> Response:
    """Add requests to a batch, all or none; they are processed at once. Answers ``{}``."""
    srv = server(request)
    max_bytes = srv.settings.dialect_limits.xai_max_bytes_per_call

    def op(items: list[tuple[str, bytes]]) -> tuple[int, bytes]:
        try:
            srv.store.add_requests(batch_id, items, dialect=NAME, while_processing=True)
        except Conflict as exc:
            existing = exc.details.get("custom_ids")
            if existing is None:  # cancelled or failed: it takes no more requests
                raise InvalidRequest(exc.message, grpc="failed_precondition") from None
            shown = ", ".join(repr(c) for c in existing[:10])
            raise Conflict(
                f"{len(existing)} batch_request_id(s) are in batch {batch_id} already: {shown}. "
                "Nothing was added; send only the requests the batch does not hold yet.",
                batch_request_ids=existing,
            ) from None
        srv.worker.wake()
        return 200, b"{}"

    return await idempotent_post(
        request,
        srv.store,
        who,
        op,
        lambda raw: parse_add(raw, max_bytes),
        max_bytes=max_bytes,
        scope=NAME + ":",
    )


@router.get("/v1/batches/{batch_id}/requests", summary="List the batch's request metadata")
def list_requests(
    request: Request,
    batch_id: str,
    limit: int = Query(PAGE_DEFAULT, ge=1, le=10_000, description="Requests per page."),
    pagination_token: str | None = Query(None, description="The previous page's token."),
    who: str = Depends(caller),
) -> Response:
    """A page of ``batch_request_metadata``, in the order the requests were added."""
    with _token_errors():
        items, more = server(request).store.list_requests(
            batch_id, limit, _cursor(pagination_token), None, dialect=NAME, models=True
        )
    metadata = [
        {
            "batch_request_id": item["custom_id"],
            "endpoint": ENDPOINT,
            "model": item["model"] or "",
            "state": STATES.get(item["status"], "STATE_UNKNOWN"),
        }
        for item in items
    ]
    last = items[-1]["id"] if items else None
    return json_response(_page("batch_request_metadata", metadata, more, last))


@router.get("/v1/batches/{batch_id}/results", summary="List the batch's results")
def list_results(
    request: Request,
    batch_id: str,
    limit: int = Query(PAGE_DEFAULT, ge=1, le=10_000, description="Results per page."),
    pagination_token: str | None = Query(None, description="The previous page's token."),
    who: str = Depends(caller),
) -> Response:
    """A page of ``results`` of requests that have ended (succeeded or failed)."""
    with _token_errors():
        rows, more = server(request).store.results_page(
            batch_id, limit, _cursor(pagination_token), dialect=NAME
        )
    last = orjson.loads(rows[-1])["id"] if rows else None
    return json_response(_page("results", [result_object(r) for r in rows], more, last))


@router.post("/v1/batches/{batch_id}:cancel", summary="Cancel a batch")
async def cancel_batch(request: Request, batch_id: str, who: str = Depends(caller)) -> Response:
    """Stop the batch's pending requests (they count as cancelled); a batch that has
    ended already is answered as it is."""
    srv = server(request)

    def op(raw: bytes) -> tuple[int, bytes]:
        try:
            batch = srv.store.cancel(batch_id, NAME)
        except Conflict:  # it has ended
            batch = srv.store.get_batch(batch_id, NAME)
        srv.worker.wake()
        return 200, orjson.dumps(batch_object(batch))

    max_bytes = srv.settings.limits.max_bytes_per_call
    return await idempotent_post(request, srv.store, who, op, max_bytes=max_bytes, scope=NAME + ":")


DIALECT = Dialect(NAME, "/xai", "/xai/v1", router, error_body)
