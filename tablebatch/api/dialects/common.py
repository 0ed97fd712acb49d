"""Pieces the provider dialects share: reversible custom_ids, request lines, times, results.

A dialect receives the job's requests as seed request lines (``{"custom_id",
"body"}`` encoded as JSON) and hands back results in the seed's shape; what is
here turns one into the other without knowing any provider.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

from tablebatch.api.adding import encode_request
from tablebatch.api.errors import BatchApiError
from tablebatch.api.models import BatchStatus


class UnknownStatusError(BatchApiError):
    """A provider reported a status this dialect does not know: stop, rather than guess."""

    def __init__(self, provider: str, batch_id: str, status: object) -> None:
        super().__init__(
            f"{provider} batch {batch_id} has status {status!r}, which tablebatch does not "
            "know; it stops rather than guess whether the batch ended. Check the batch in "
            f"the {provider} console, and upgrade tablebatch if {provider} added a status."
        )
        self.status = status


def map_status(
    provider: str, batch_id: str, status: object, table: dict[str, BatchStatus]
) -> BatchStatus:
    """``status`` through the dialect's table, or ``UnknownStatusError``."""
    if isinstance(status, str) and status in table:
        return table[status]
    raise UnknownStatusError(provider, batch_id, status)


class IdCodec:
    """Maps custom_ids to ids a provider accepts, reversibly.

    An id that matches the provider's pattern, fits ``max_length`` and does not
    start with the escape prefix is sent as it is; any other is sent as the prefix plus the
    base64url of its UTF-8 bytes, which uses only ``[A-Za-z0-9_-]``. Too long
    even then, it is refused with a message saying so.
    """

    PREFIX = "b64_"

    def __init__(self, provider: str, pattern: str | None = None, max_length: int | None = None):
        self.provider = provider
        self.pattern = re.compile(pattern) if pattern else None
        self.max_length = max_length

    def encode(self, custom_id: str) -> str:
        """The id to send for ``custom_id``."""
        if self.pattern is None:
            return custom_id
        fits = self.max_length is None or len(custom_id) <= self.max_length
        if fits and self.pattern.fullmatch(custom_id) and not custom_id.startswith(self.PREFIX):
            return custom_id
        wire = self.PREFIX + base64.urlsafe_b64encode(custom_id.encode()).decode().rstrip("=")
        if self.max_length is not None and len(wire) > self.max_length:
            raise ValueError(
                f"custom_id {custom_id!r} cannot be sent to {self.provider}: it allows "
                f"{self.pattern.pattern} and the id, encoded to fit, has {len(wire)} "
                f"characters; use shorter row ids."
            )
        return wire

    def decode(self, wire: str) -> str:
        """The custom_id that ``wire`` was sent for."""
        if self.pattern is None or not wire.startswith(self.PREFIX):
            return wire
        encoded = wire[len(self.PREFIX) :]
        try:
            return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            raise BatchApiError(
                f"{self.provider} returned the request id {wire!r}, which tablebatch did not send."
            ) from None


def decode_line(request: Any) -> tuple[str, dict[str, Any]]:
    """A seed request (a ``(custom_id, bytes)`` pair or a mapping) as its custom_id and body."""
    custom_id, item = encode_request(request)
    try:
        body = orjson.loads(item)["body"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise ValueError(f"the request of {custom_id!r} is not a seed request line") from None
    if not isinstance(body, dict):
        raise ValueError(f"the request of {custom_id!r} has no body object")
    return custom_id, body


def unique(requests: Iterable[Any]) -> list[tuple[str, dict[str, Any]]]:
    """Decoded requests, refusing a custom_id given twice."""
    seen: set[str] = set()
    out = []
    for request in requests:
        custom_id, body = decode_line(request)
        if custom_id in seen:
            raise ValueError(f"custom_id {custom_id!r} is given twice; custom_ids are unique.")
        seen.add(custom_id)
        out.append((custom_id, body))
    return out


def parse_time(value: object) -> datetime | None:
    """A provider's timestamp (Unix seconds, or an RFC 3339 string) as an aware datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def completed(custom_id: str, response: dict[str, Any], result_id: str | None = None) -> dict:
    """A seed result of an answered request."""
    return {"id": result_id, "custom_id": custom_id, "status": "completed", "response": response}


def failed(custom_id: str, error_type: str, message: str, result_id: str | None = None) -> dict:
    """A seed result of a failed request."""
    return {
        "id": result_id,
        "custom_id": custom_id,
        "status": "failed",
        "error": {"type": error_type, "message": message},
    }


def cancelled(custom_id: str, batch_id: str, result_id: str | None = None) -> dict:
    """A seed result of a request a cancel stopped (its error type is ``cancelled``, which
    the job reads as "someone meant to stop it")."""
    return {
        "id": result_id,
        "custom_id": custom_id,
        "status": "cancelled",
        "error": {
            "type": "cancelled",
            "message": f"batch {batch_id} was cancelled before this request was answered",
        },
    }


def error_text(error: object) -> tuple[str, str]:
    """A provider's error object (or string) as ``(type, message)``."""
    if isinstance(error, dict):
        inner = error.get("error")
        if isinstance(inner, dict):  # {"type": "error", "error": {"type", "message"}}
            return error_text(inner)
        kind = error.get("type") or error.get("code") or "error"
        message = error.get("message") or error.get("msg") or orjson.dumps(error).decode()
        return str(kind), str(message)
    if isinstance(error, str) and error:
        return "error", error
    return "error", "the request failed with no error"
