"""The Anthropic dialect's entries in the OpenAPI document: the ``anthropic-version``
header every route requires, the create body as ``anthropic.py`` checks it, the
MessageBatch object, and Anthropic's error shape."""

from __future__ import annotations

from tablebatch.server.dialects.anthropic import CUSTOM_ID, ERROR_TYPES
from tablebatch.server.openapi import DialectDoc, Docs, OperationDoc, Schema, header, links
from tablebatch.server.settings import ServerSettings

ERROR: Schema = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {
                "type": {"type": "string", "enum": sorted({*ERROR_TYPES.values()})},
                "message": {"type": "string"},
            },
        },
    },
}
TIME: Schema = {"type": "string", "format": "date-time"}
BATCH: Schema = {
    "type": "object",
    "required": ["id", "type", "processing_status", "request_counts", "created_at"],
    "properties": {
        "id": {"type": "string"},
        "type": {"const": "message_batch"},
        "processing_status": {"type": "string", "enum": ["in_progress", "canceling", "ended"]},
        "request_counts": {
            "type": "object",
            "required": ["processing", "succeeded", "errored", "canceled", "expired"],
            "properties": {
                k: {"type": "integer"}
                for k in ("processing", "succeeded", "errored", "canceled", "expired")
            },
        },
        "created_at": TIME,
        "expires_at": TIME,
        "ended_at": {"type": ["string", "null"], "format": "date-time"},
        "cancel_initiated_at": {"type": ["string", "null"], "format": "date-time"},
        "archived_at": {"type": "null"},
        "results_url": {"type": ["string", "null"]},
    },
}
LIST: Schema = {
    "type": "object",
    "required": ["data", "has_more", "first_id", "last_id"],
    "properties": {
        "data": {"type": "array", "items": BATCH},
        "has_more": {"type": "boolean"},
        "first_id": {"type": ["string", "null"]},
        "last_id": {"type": ["string", "null"]},
    },
}
VERSION = header(
    "anthropic-version",
    "The API version, e.g. 2023-06-01 (required, as at Anthropic; any value is taken).",
    required=True,
    pattern="[^ \\t]",
)


def _create(max_requests: int, max_bytes: int) -> Schema:
    return {
        "type": "object",
        "required": ["requests"],
        "properties": {
            "requests": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_requests,
                "description": f"At most {max_requests} requests and {max_bytes} bytes (over: "
                "413); custom_ids unique within the batch. A bad custom_id refuses the call.",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["custom_id", "params"],
                    "properties": {
                        "custom_id": {"type": "string", "pattern": CUSTOM_ID.pattern},
                        "params": {
                            "description": "Messages params (model, max_tokens, messages, "
                            "system, temperature, top_p, stop_sequences). As at Anthropic they "
                            "are checked when the request is processed: bad params end the "
                            "request errored, with an invalid_request_error."
                        },
                    },
                },
            }
        },
    }


def operations(settings: ServerSettings) -> Docs:
    """The Anthropic dialect's entries."""
    limits = settings.dialect_limits
    made = links(
        "/anthropic/v1/messages/batches/{message_batch_id}",
        "message_batch_id",
        "$response.body#/id",
        {"GetBatch": "GET", "GetResults": "GET /results", "Cancel": "POST /cancel"},
    )
    no_batch = {404: "No message batch with this id"}
    missing = "anthropic-version is missing"
    jsonl = {"type": "string", "description": "One {custom_id, result} JSON object a line."}
    return {
        ("POST", "/v1/messages/batches"): OperationDoc(
            {
                400: f"{missing}; the body is not a requests list, or a custom_id is bad or "
                "repeated",
                413: f"Over {limits.anthropic_max_bytes} bytes",
            },
            body=_create(limits.anthropic_max_requests, limits.anthropic_max_bytes),
            headers=(VERSION,),
            response=BATCH,
            idempotent=True,
            links=made,
        ),
        ("GET", "/v1/messages/batches"): OperationDoc(
            {
                400: f"{missing}; before_id or after_id names no batch, both are given, or "
                "limit is out of range"
            },
            headers=(VERSION,),
            response=LIST,
        ),
        ("GET", "/v1/messages/batches/{message_batch_id}"): OperationDoc(
            {400: missing, **no_batch}, headers=(VERSION,), response=BATCH
        ),
        ("GET", "/v1/messages/batches/{message_batch_id}/results"): OperationDoc(
            {400: f"{missing}; the batch has not ended yet", **no_batch},
            headers=(VERSION,),
            response=jsonl,
            response_type="application/x-jsonl",
        ),
        ("POST", "/v1/messages/batches/{message_batch_id}/cancel"): OperationDoc(
            {400: f"{missing}; the batch has ended", **no_batch},
            headers=(VERSION,),
            response=BATCH,
            idempotent=True,
        ),
    }


DOC = DialectDoc(ERROR, operations, auth=("x-api-key", "bearer"))
