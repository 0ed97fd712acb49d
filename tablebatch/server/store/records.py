"""The store's records and the ids and JSON they are served with.

``StoredBatch`` is a row of the ``batches`` table (not the API's ``Batch``, which
``to_api`` renders); ``StoredFile`` a dialect's file; ``Outcome`` what a backend
made of one request, which the worker records.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

BATCH_STATUSES = (
    "created",
    "pending",
    "processing",
    "completed",
    "failed",
    "cancelling",
    "cancelled",
    "expired",  # dialect batches only: past their window, pending requests expired
)
REQUEST_STATUSES = ("pending", "completed", "failed", "cancelled", "expired")
TERMINAL = frozenset({"completed", "failed", "cancelled", "expired"})


def rfc3339(ts: float | None) -> str | None:
    """Format epoch seconds as RFC 3339 in UTC, the way the spec shows (``…T10:00:00Z``)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def request_id(n: int) -> str:
    """The public id of the request stored as row ``n``."""
    return f"req_{n:012x}"


REQUEST_ID = re.compile(r"req_([0-9a-f]{12})")


def request_n(rid: str) -> int | None:
    """The row of the request with public id ``rid``, or None when it is not one."""
    match = REQUEST_ID.fullmatch(rid)
    return int(match.group(1), 16) if match else None


@dataclass(frozen=True)
class StoredBatch:
    """A batch row, as the worker and the HTTP layer see it."""

    seq: int
    id: str
    name: str
    description: str | None
    model: str | None
    endpoint: str
    status: str
    created_at: float
    started_at: float | None
    ended_at: float | None
    request_count: int
    completed_count: int
    failed_count: int
    cancelled_count: int
    request_bytes: int
    prompt_tokens: int
    completion_tokens: int
    error: str | None
    dialect: str = "seed"
    meta: str | None = None
    cancel_requested_at: float | None = None

    @property
    def info(self) -> dict[str, Any]:
        """What a dialect keeps about the batch (its ``meta`` JSON), or ``{}``."""
        return orjson.loads(self.meta) if self.meta else {}

    @property
    def pending_count(self) -> int:
        """Requests not yet ended."""
        return self.request_count - self.completed_count - self.failed_count - self.cancelled_count

    def to_api(self) -> dict[str, Any]:
        """The batch object of the API."""
        ended = rfc3339(self.ended_at)
        return {
            "id": self.id,
            "object": "batch",
            "name": self.name,
            "description": self.description,
            "model": self.model,
            "endpoint": self.endpoint,
            "status": self.status,
            "created_at": rfc3339(self.created_at),
            "started_at": rfc3339(self.started_at),
            "completed_at": ended if self.status == "completed" else None,
            "failed_at": ended if self.status == "failed" else None,
            "cancelled_at": ended if self.status == "cancelled" else None,
            "request_count": self.request_count,
            "completed_count": self.completed_count,
            "failed_count": self.failed_count,
            "cancelled_count": self.cancelled_count,
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
            },
            "error": orjson.loads(self.error) if self.error else None,
        }


@dataclass(frozen=True)
class StoredFile:
    """A file kept for a dialect (OpenAI's uploads and batch outputs)."""

    id: str
    purpose: str
    filename: str
    bytes: int
    created_at: float
    content: bytes | None = None  # only when asked for


@dataclass(frozen=True)
class Outcome:
    """What the backend made of one request: a response or an error."""

    n: int
    custom_id: str
    response: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    encoded: bytes | None = None  # the result's JSON, when the backend built it already


def encode_result(n: int, custom_id: str, status: str, key: str, value: Any) -> bytes:
    """The JSON of a result object, as it is stored and served."""
    return orjson.dumps({"id": request_id(n), "custom_id": custom_id, "status": status, key: value})
