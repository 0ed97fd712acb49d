"""The xAI dialect's entries in the OpenAPI document: bodies as ``xai.py`` checks them,
the Batch message and its pages, and xAI's error shape ``{"code", "error"}``."""

from __future__ import annotations

from tablebatch.server.dialects.xai import GRPC_TEXT, STATES
from tablebatch.server.openapi import DialectDoc, Docs, OperationDoc, Schema, chat_body, links
from tablebatch.server.settings import ServerSettings
from tablebatch.server.validation import MAX_CUSTOM_ID

ERROR: Schema = {
    "type": "object",
    "required": ["code", "error"],
    "properties": {
        "code": {
            "type": "string",
            "enum": sorted(GRPC_TEXT.values()),
            "description": "The gRPC status, as text.",
        },
        "error": {"type": "string", "description": "What went wrong, for a person."},
    },
}
COUNTS = ("num_requests", "num_pending", "num_success", "num_error", "num_cancelled")
BATCH: Schema = {
    "type": "object",
    "required": ["batch_id", "name", "create_time", "expire_time", "state"],
    "properties": {
        "batch_id": {"type": "string"},
        "name": {"type": "string"},
        "create_time": {"type": "string", "format": "date-time"},
        "expire_time": {"type": "string", "format": "date-time"},
        "cancel_time": {"type": "string", "format": "date-time"},
        "cancel_by_xai_message": {"type": "string"},
        "create_api_key_id": {"type": "string"},
        "state": {
            "type": "object",
            "required": list(COUNTS),
            "properties": {k: {"type": "integer"} for k in COUNTS},
        },
        "cost_breakdown": {"type": "object"},
    },
}
TOKEN: Schema = {
    "type": "string",
    "description": "Pass it to get the next page; absent on the last.",
}


def _page(key: str, item: Schema) -> Schema:
    return {
        "type": "object",
        "required": [key],
        "properties": {key: {"type": "array", "items": item}, "pagination_token": TOKEN},
    }


METADATA: Schema = {
    "type": "object",
    "required": ["batch_request_id", "endpoint", "model", "state"],
    "properties": {
        "batch_request_id": {"type": "string"},
        "endpoint": {"type": "string"},
        "model": {"type": "string"},
        "state": {"type": "string", "enum": sorted({*STATES.values(), "STATE_UNKNOWN"})},
    },
}
RESULT: Schema = {
    "type": "object",
    "required": ["batch_request_id", "batch_result"],
    "properties": {"batch_request_id": {"type": "string"}, "batch_result": {"type": "object"}},
}
CREATE: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {"name": {"type": "string", "minLength": 1}},
    "description": "Batches from files (input_file_id) are not served locally.",
}
ADD: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["batch_requests"],
    "properties": {
        "batch_requests": {
            "type": "array",
            "minItems": 1,
            "description": "Checked whole: one bad item refuses the call and is named. "
            "batch_request_ids are unique within the batch (and within this call).",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["batch_request"],
                "properties": {
                    "batch_request_id": {
                        "type": ["string", "null"],
                        "minLength": 1,
                        "maxLength": MAX_CUSTOM_ID,
                        "description": "Made up (a UUID) when absent.",
                    },
                    "batch_request": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["chat_get_completion"],
                        "properties": {"chat_get_completion": chat_body("chat_get_completion")},
                    },
                },
            },
        }
    },
}


def operations(settings: ServerSettings) -> Docs:
    """The xAI dialect's entries."""
    limits = settings.dialect_limits
    made = links(
        "/xai/v1/batches/{batch_id}",
        "batch_id",
        "$response.body#/batch_id",
        {
            "GetBatch": "GET",
            "AddRequests": "POST /requests",
            "ListRequests": "GET /requests",
            "ListResults": "GET /results",
            "Cancel": "POST :cancel",
        },
    )
    no_batch = {404: "No batch with this id"}
    token = "pagination_token is not one this server gave for this list, or limit is out of range"
    return {
        ("POST", "/v1/batches"): OperationDoc(
            {400: "The body is not {name}"},
            body=CREATE,
            response=BATCH,
            idempotent=True,
            links=made,
        ),
        ("GET", "/v1/batches"): OperationDoc({400: token}, response=_page("batches", BATCH)),
        ("GET", "/v1/batches/{batch_id}"): OperationDoc(no_batch, response=BATCH),
        ("POST", "/v1/batches/{batch_id}/requests"): OperationDoc(
            {
                400: "An item is invalid, or the batch was cancelled or failed",
                **no_batch,
                409: "A batch_request_id is in the batch already",
                413: f"Over {limits.xai_max_bytes_per_call} bytes",
            },
            body=ADD,
            response={"type": "object", "maxProperties": 0},
            idempotent=True,
        ),
        ("GET", "/v1/batches/{batch_id}/requests"): OperationDoc(
            {400: token, **no_batch}, response=_page("batch_request_metadata", METADATA)
        ),
        ("GET", "/v1/batches/{batch_id}/results"): OperationDoc(
            {400: token, **no_batch}, response=_page("results", RESULT)
        ),
        ("POST", "/v1/batches/{batch_id}:cancel"): OperationDoc(
            no_batch, response=BATCH, idempotent=True
        ),
    }


# a key is "Authorization: Bearer <key>"; a wrong one is a 400, as at api.x.ai
DOC = DialectDoc(ERROR, operations, auth=(), wrong_key_status=400)
