"""The OpenAI Batch dialect, under ``/openai``: Files and Batches as api.openai.com has them.

The shapes are those of the official SDK's types (``openai/types/batch.py``,
``file_object.py``): upload a JSONL file (``POST /v1/files``, purpose
``batch``), create a batch on it (``POST /v1/batches``), poll it, and read
``output_file_id`` / ``error_file_id`` with ``GET /v1/files/{id}/content``.

As at OpenAI, the file is checked after the batch is created: a file with bad
lines (not JSON, a repeated ``custom_id``, a ``url`` other than the batch's
endpoint, mixed models, too many requests) gives a batch whose status is
``failed`` with ``errors``; a request whose body the model cannot take fails
alone, with a 400 in the error file. Statuses map from the store's: created →
``validating``, processing → ``in_progress`` (``finalizing`` once no request is
pending), and the terminal ones by name (``cancelling`` → ``cancelled``).
Output files are written once, when a finished batch is first looked at. The
JSONL both ways is in ``openai_jsonl``.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from tablebatch.server.dialects.common import (
    Dialect,
    bearer_token,
    caller_of,
    expires_at,
    json_response,
    keys_required,
    parse_object,
    server,
)
from tablebatch.server.dialects.openai_jsonl import read_input, render_outputs
from tablebatch.server.errors import (
    AuthenticationFailed,
    Conflict,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
)
from tablebatch.server.idempotency import idempotent_post
from tablebatch.server.openapi import CURSOR
from tablebatch.server.store import StoredBatch, StoredFile

NAME = "openai"
ENDPOINT = "/v1/chat/completions"  # the one endpoint the backends answer
WINDOW = "24h"
MAX_METADATA = 16

router = APIRouter(tags=["OpenAI dialect"])

STATUSES = {
    "created": "validating",
    "pending": "validating",
    "processing": "in_progress",
    "completed": "completed",
    "failed": "failed",
    "cancelling": "cancelling",
    "cancelled": "cancelled",
    "expired": "expired",
}


def error_body(status: int, kind: str, message: str, details: dict[str, Any]) -> dict[str, Any]:
    """An error in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""
    code = details.get("code")
    if status == 429:
        kind, code = "requests", code or "rate_limit_exceeded"
    elif status >= 500:
        kind = "server_error"
    else:
        kind = "invalid_request_error"
    param = details.get("param")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def caller(request: Request) -> str:
    """Checks ``Authorization: Bearer <key>``; returns a name of the caller that holds no
    secret (the key itself is never repeated in an answer)."""
    if not keys_required(request):
        return "anonymous"
    token = bearer_token(request)
    if token is None:
        raise AuthenticationFailed(
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
    who = caller_of(request, token)
    if who is None:
        raise AuthenticationFailed(
            "Incorrect API key provided. Check the key the client sends.", code="invalid_api_key"
        )
    return who


def _ts(value: float | None) -> int | None:
    return int(value) if value is not None else None


def file_object(file: StoredFile) -> dict[str, Any]:
    """The File object of the API."""
    return {
        "id": file.id,
        "object": "file",
        "bytes": file.bytes,
        "created_at": int(file.created_at),
        "filename": file.filename,
        "purpose": file.purpose,
        "status": "processed",
        "status_details": None,
        "expires_at": None,
    }


def batch_object(batch: StoredBatch) -> dict[str, Any]:
    """The Batch object of the API, from a stored batch."""
    info = batch.info
    status = STATUSES[batch.status]
    if status == "in_progress" and batch.pending_count == 0:
        status = "finalizing"
    ended = _ts(batch.ended_at)
    errors = orjson.loads(batch.error) if batch.error else None
    if errors is not None and "data" not in errors:  # a batch that failed while processing
        errors = {
            "object": "list",
            "data": [
                {"code": errors["type"], "message": errors["message"], "param": None, "line": None}
            ],
        }
    return {
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "model": batch.model,
        "errors": errors,
        "input_file_id": info.get("input_file_id"),
        "completion_window": info.get("completion_window", WINDOW),
        "status": status,
        "output_file_id": info.get("output_file_id"),
        "error_file_id": info.get("error_file_id"),
        "created_at": int(batch.created_at),
        "in_progress_at": _ts(batch.started_at),
        "expires_at": int(expires_at(batch)),
        "finalizing_at": ended if status in ("completed", "expired") else None,
        "completed_at": ended if status == "completed" else None,
        "failed_at": ended if status == "failed" else None,
        "expired_at": ended if status == "expired" else None,
        "cancelling_at": _ts(batch.cancel_requested_at),
        "cancelled_at": ended if status == "cancelled" else None,
        "request_counts": {
            "total": batch.request_count,
            "completed": batch.completed_count,
            "failed": batch.failed_count,
        },
        "usage": {
            "input_tokens": batch.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": batch.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": batch.prompt_tokens + batch.completion_tokens,
        },
        "metadata": info.get("metadata"),
    }


def _finished(request: Request, batch: StoredBatch) -> StoredBatch:
    """The batch, with its output files written if it has just finished."""
    if batch.status in ("completed", "failed", "cancelled", "expired") and not batch.info.get(
        "outputs"
    ):
        return server(request).store.attach_outputs(batch.id, NAME, render_outputs)
    return batch


# -- routes ------------------------------------------------------------------------


@router.post("/v1/files", summary="Upload a file (purpose batch)")
async def upload_file(request: Request, who: str = Depends(caller)) -> Response:
    """Keep an uploaded JSONL file for a batch (multipart: ``file`` and ``purpose``)."""
    srv = server(request)
    limit = srv.settings.dialect_limits.openai_max_file_bytes
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"This upload has {length} bytes; a file may have {limit}.")
    form = await request.form(max_files=1, max_fields=10)
    upload, purpose = form.get("file"), form.get("purpose")
    if not isinstance(upload, UploadFile):
        raise InvalidRequest(
            "Missing required parameter: 'file' (a multipart file part).",
            param="file",
            code="missing_required_parameter",
        )
    if purpose is None:
        raise InvalidRequest(
            "Missing required parameter: 'purpose'.",
            param="purpose",
            code="missing_required_parameter",
        )
    if purpose != "batch":
        raise InvalidRequest(
            f"Invalid value for 'purpose': {purpose!r}. This local server keeps files for "
            "batches only: upload with purpose 'batch'.",
            param="purpose",
            code="invalid_value",
        )
    content = await upload.read()
    if len(content) > limit:
        raise PayloadTooLarge(f"This file has {len(content)} bytes; a file may have {limit}.")
    stored = await run_in_threadpool(
        srv.store.create_file, "batch", upload.filename or "input.jsonl", content
    )
    return json_response(file_object(stored))


@router.get("/v1/files/{file_id}", summary="Get a file's metadata")
def get_file(request: Request, file_id: str, who: str = Depends(caller)) -> Response:
    """The File object of an upload or of a batch's output."""
    return json_response(file_object(_file(request, file_id)))


@router.get("/v1/files/{file_id}/content", summary="Get a file's content")
def file_content(request: Request, file_id: str, who: str = Depends(caller)) -> Response:
    """The bytes of a file: an upload, or a batch's output or error JSONL."""
    stored = _file(request, file_id, content=True)
    return Response(stored.content, media_type="application/octet-stream")


def _file(request: Request, file_id: str, *, content: bool = False) -> StoredFile:
    try:
        return server(request).store.get_file(file_id, content=content)
    except NotFound as exc:
        raise NotFound(exc.message, param="id") from None


def _create_spec(raw: bytes) -> dict[str, Any]:
    """Check a create-batch body; OpenAI answers these problems with a 400 at once."""
    shape = '{"input_file_id", "endpoint", "completion_window": "24h", "metadata"?}'
    spec = parse_object(raw, shape)
    for field in ("input_file_id", "endpoint", "completion_window"):
        if not isinstance(spec.get(field), str) or not spec[field]:
            raise InvalidRequest(
                f"Missing required parameter: '{field}'.",
                param=field,
                code="missing_required_parameter",
            )
    if spec["completion_window"] != WINDOW:
        raise InvalidRequest(
            f"Invalid value: {spec['completion_window']!r}. Supported values are: '24h'.",
            param="completion_window",
            code="invalid_value",
        )
    if spec["endpoint"] != ENDPOINT:
        raise InvalidRequest(
            f"Invalid value: {spec['endpoint']!r}. The local server's backends answer chat "
            f"completions only: use {ENDPOINT!r}.",
            param="endpoint",
            code="invalid_value",
        )
    metadata = spec.get("metadata")
    if metadata is not None and not (
        isinstance(metadata, dict)
        and len(metadata) <= MAX_METADATA
        and all(
            isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512
            for k, v in metadata.items()
        )
    ):
        raise InvalidRequest(
            "Invalid 'metadata': at most 16 pairs of strings, keys up to 64 characters and "
            "values up to 512.",
            param="metadata",
            code="invalid_value",
        )
    return spec


@router.post("/v1/batches", summary="Create a batch from an uploaded file")
async def create_batch(request: Request, who: str = Depends(caller)) -> Response:
    """Create a batch over an input file; its lines are checked, then it runs."""
    srv = server(request)
    limits = srv.settings.dialect_limits

    def op(spec: dict[str, Any]) -> tuple[int, bytes]:
        try:
            stored = srv.store.get_file(spec["input_file_id"], content=True)
        except NotFound as exc:
            raise NotFound(exc.message, param="input_file_id") from None
        if stored.purpose != "batch":
            raise InvalidRequest(
                f"File {stored.id} has purpose {stored.purpose!r}; a batch's input file must be "
                "uploaded with purpose 'batch'.",
                param="input_file_id",
                code="invalid_value",
            )
        assert stored.content is not None
        items, rejected, model, errors = read_input(
            stored.content, spec["endpoint"], limits.openai_max_requests, limits.openai_max_bytes
        )
        metadata = spec.get("metadata")
        with srv.store.transaction():  # a crash leaves no batch that never starts
            batch = srv.store.create_batch(
                (metadata or {}).get("name") or stored.id,
                (metadata or {}).get("description"),
                model,
                spec["endpoint"],
                dialect=NAME,
                batch_id="batch_" + secrets.token_hex(16),
                meta={
                    "input_file_id": stored.id,
                    "completion_window": spec["completion_window"],
                    "metadata": metadata,
                },
                expires_in=limits.batch_window_s,
            )
            answer = batch_object(batch)  # as OpenAI answers: the batch is validating
            if errors:
                srv.store.reject(batch.id, NAME, {"object": "list", "data": errors})
            else:
                srv.store.add_requests(batch.id, items, dialect=NAME, rejected=rejected)
                srv.store.start(batch.id, NAME)
        srv.worker.wake()
        return 200, orjson.dumps(answer)

    return await idempotent_post(
        request,
        srv.store,
        who,
        op,
        _create_spec,
        max_bytes=srv.settings.limits.max_bytes_per_call,
        scope=NAME + ":",
    )


@router.get("/v1/batches", summary="List batches, newest first")
def list_batches(
    request: Request,
    after: str | None = Query(
        None, description="The id of the last batch of the last page.", json_schema_extra=CURSOR
    ),
    limit: int = Query(20, ge=1, le=100, description="Batches per page (1 to 100)."),
    who: str = Depends(caller),
) -> Response:
    """A page of batches: ``{object, data, first_id, last_id, has_more}``."""
    batches, more = server(request).store.list_batches(limit, after, None, None, dialect=NAME)
    data = [batch_object(_finished(request, b)) for b in batches]
    return json_response(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": more,
        }
    )


@router.get("/v1/batches/{batch_id}", summary="Get a batch")
def get_batch(request: Request, batch_id: str, who: str = Depends(caller)) -> Response:
    """The batch, with its output files once it has finished."""
    batch = server(request).store.get_batch(batch_id, NAME)
    return json_response(batch_object(_finished(request, batch)))


@router.post("/v1/batches/{batch_id}/cancel", summary="Cancel a batch")
async def cancel_batch(request: Request, batch_id: str, who: str = Depends(caller)) -> Response:
    """Ask to cancel: the batch is ``cancelling``, then ``cancelled`` with partial results."""
    srv = server(request)

    def op(raw: bytes) -> tuple[int, bytes]:
        try:
            batch = srv.store.cancel(batch_id, NAME)
        except Conflict:
            status = STATUSES[srv.store.get_batch(batch_id, NAME).status]
            raise Conflict(f"Cannot cancel a batch with status '{status}'.") from None
        srv.worker.wake()
        return 200, orjson.dumps(batch_object(batch))

    max_bytes = srv.settings.limits.max_bytes_per_call
    return await idempotent_post(request, srv.store, who, op, max_bytes=max_bytes, scope=NAME + ":")


DIALECT = Dialect(NAME, "/openai", "/openai/v1", router, error_body)
