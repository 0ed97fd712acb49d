"""The OpenAI dialect's entries in the OpenAPI document: bodies as ``openai.py`` checks
them, the File and Batch objects, and OpenAI's error shape."""

from __future__ import annotations

from tablebatch.server.dialects.openai import ENDPOINT, MAX_METADATA, STATUSES, WINDOW
from tablebatch.server.openapi import (
    DialectDoc,
    Docs,
    OperationDoc,
    Schema,
    links,
    operation_ref,
)
from tablebatch.server.settings import ServerSettings

NULLABLE_INT: Schema = {"type": ["integer", "null"]}
ERROR: Schema = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {
                    "type": "string",
                    "enum": ["invalid_request_error", "requests", "server_error"],
                },
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
FILE: Schema = {
    "type": "object",
    "required": ["id", "object", "bytes", "created_at", "filename", "purpose", "status"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "file"},
        "bytes": {"type": "integer"},
        "created_at": {"type": "integer"},
        "filename": {"type": "string"},
        "purpose": {"type": "string", "enum": ["batch", "batch_output"]},
        "status": {"const": "processed"},
    },
}
BATCH: Schema = {
    "type": "object",
    "required": ["id", "object", "endpoint", "status", "created_at", "request_counts"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "batch"},
        "endpoint": {"type": "string"},
        "model": {"type": ["string", "null"]},
        "errors": {"type": ["object", "null"]},
        "input_file_id": {"type": ["string", "null"]},
        "completion_window": {"type": "string"},
        "status": {"type": "string", "enum": sorted({*STATUSES.values(), "finalizing"})},
        "output_file_id": {"type": ["string", "null"]},
        "error_file_id": {"type": ["string", "null"]},
        "created_at": {"type": "integer"},
        "expires_at": {"type": "integer"},
        **{
            f"{when}_at": NULLABLE_INT
            for when in ("in_progress", "finalizing", "completed", "failed", "expired")
        },
        "cancelling_at": NULLABLE_INT,
        "cancelled_at": NULLABLE_INT,
        "request_counts": {
            "type": "object",
            "required": ["total", "completed", "failed"],
            "properties": {k: {"type": "integer"} for k in ("total", "completed", "failed")},
        },
        "usage": {"type": "object"},
        "metadata": {"type": ["object", "null"]},
    },
}
UPLOAD: Schema = {
    "type": "object",
    "required": ["file", "purpose"],
    "properties": {
        "file": {
            "type": "string",
            "format": "binary",
            "description": "The JSONL input: one {custom_id, method, url, body} per line "
            "(its lines are checked when a batch is created from it).",
        },
        "purpose": {"type": "string", "enum": ["batch"]},
    },
}
CREATE: Schema = {
    "type": "object",
    "required": ["input_file_id", "endpoint", "completion_window"],
    "properties": {
        "input_file_id": {
            "type": "string",
            "minLength": 1,
            "description": "An uploaded file of purpose batch.",
        },
        "endpoint": {"type": "string", "enum": [ENDPOINT]},
        "completion_window": {"type": "string", "enum": [WINDOW]},
        "metadata": {
            "type": ["object", "null"],
            "maxProperties": MAX_METADATA,
            "propertyNames": {"maxLength": 64},
            "additionalProperties": {"type": "string", "maxLength": 512},
            "description": "Up to 16 string pairs; `name` and `description` name the batch.",
        },
    },
}
LIST: Schema = {
    "type": "object",
    "required": ["object", "data", "has_more"],
    "properties": {
        "object": {"const": "list"},
        "data": {"type": "array", "items": BATCH},
        "first_id": {"type": ["string", "null"]},
        "last_id": {"type": ["string", "null"]},
        "has_more": {"type": "boolean"},
    },
}


def operations(settings: ServerSettings) -> Docs:
    """The OpenAI dialect's entries."""
    limits = settings.dialect_limits
    no_batch, no_file = {404: "No batch with this id"}, {404: "No file with this id"}
    batch_link = links(
        "/openai/v1/batches/{batch_id}",
        "batch_id",
        "$response.body#/id",
        {"GetBatch": "GET", "CancelBatch": "POST /cancel"},
    )
    file_link = links(
        "/openai/v1/files/{file_id}",
        "file_id",
        "$response.body#/id",
        {"GetFile": "GET", "GetFileContent": "GET /content"},
    ) | {
        "CreateBatch": {
            "operationRef": operation_ref("/openai/v1/batches", "POST"),
            "requestBody": {
                "input_file_id": "$response.body#/id",
                "endpoint": ENDPOINT,
                "completion_window": WINDOW,
            },
        }
    }
    return {
        ("POST", "/v1/files"): OperationDoc(
            {
                400: "The file part or the purpose is missing, or the purpose is not batch",
                413: f"Over {limits.openai_max_file_bytes} bytes",
            },
            body=UPLOAD,
            body_type="multipart/form-data",
            response=FILE,
            links=file_link,
        ),
        ("GET", "/v1/files/{file_id}"): OperationDoc(no_file, response=FILE),
        ("GET", "/v1/files/{file_id}/content"): OperationDoc(
            no_file,
            response={"type": "string", "format": "binary"},
            response_type="application/octet-stream",
        ),
        ("POST", "/v1/batches"): OperationDoc(
            {
                400: "A field is missing or invalid, or the input file's purpose is not batch",
                404: "No file input_file_id",
            },
            body=CREATE,
            response=BATCH,
            idempotent=True,
            links=batch_link,
        ),
        ("GET", "/v1/batches"): OperationDoc(
            {400: "`after` names no batch, or `limit` is out of range"}, response=LIST
        ),
        ("GET", "/v1/batches/{batch_id}"): OperationDoc(no_batch, response=BATCH),
        ("POST", "/v1/batches/{batch_id}/cancel"): OperationDoc(
            {**no_batch, 409: "The batch has ended"}, response=BATCH, idempotent=True
        ),
    }


DOC = DialectDoc(ERROR, operations)
