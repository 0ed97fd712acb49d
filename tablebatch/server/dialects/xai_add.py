"""The checks of an xAI add-requests call, done whole before anything is stored.

Items are ``{batch_request_id?, batch_request: {chat_get_completion: {...}}}``; a
missing id is made up (a UUID), as xAI does; every bad item is named.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from tablebatch.server.dialects.common import parse_object
from tablebatch.server.errors import InvalidRequest, PayloadTooLarge
from tablebatch.server.validation import MAX_CUSTOM_ID, body_problem


def parse_add(raw: bytes, max_bytes: int) -> list[tuple[str, bytes]]:
    """``(batch_request_id, chat body)`` of an add call; every bad item is named."""
    if len(raw) > max_bytes:
        raise PayloadTooLarge(
            f"This call has {len(raw)} bytes; an add-requests call may have {max_bytes}. Send "
            "the requests in several calls."
        )
    shape = (
        '{"batch_requests": [{"batch_request_id": "...", '
        '"batch_request": {"chat_get_completion": {...}}}]}'
    )
    data = parse_object(raw, shape)
    unknown = sorted(set(data) - {"batch_requests"})
    items = data.get("batch_requests")
    if unknown or not isinstance(items, list) or not items:
        raise InvalidRequest(
            f"Send {shape}" + (f"; unknown field {unknown[0]!r}." if unknown else ".")
        )
    problems: list[str] = []
    parsed: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        problem, rid, body = _item_problem(item, seen)
        if problem is not None:
            problems.append(f"batch_requests[{i}]: {problem}")
            continue
        seen.add(rid)
        parsed.append((rid, orjson.dumps(body)))
    if problems:
        more = f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise InvalidRequest(
            f"{len(problems)} of {len(items)} batch requests are invalid; nothing was added: "
            + "; ".join(problems[:10])
            + more
            + "."
        )
    return parsed


def _item_problem(item: Any, seen: set[str]) -> tuple[str | None, str, Any]:
    if not isinstance(item, dict):
        return "must be an object with batch_request_id and batch_request", "", None
    unknown = sorted(set(item) - {"batch_request_id", "batch_request"})
    if unknown:
        return f"unknown field {unknown[0]!r}", "", None
    rid = item.get("batch_request_id")
    if rid is None:
        rid = str(uuid.uuid4())  # the id is optional: xAI makes one
    if not isinstance(rid, str) or not rid or len(rid) > MAX_CUSTOM_ID:
        return f"batch_request_id must be a string of 1 to {MAX_CUSTOM_ID} characters", "", None
    if rid in seen:
        return f"batch_request_id {rid!r} repeats an earlier one of this call", rid, None
    request = item.get("batch_request")
    if not isinstance(request, dict) or len(request) != 1:
        return "batch_request must hold one request: {chat_get_completion: {...}}", rid, None
    kind, body = next(iter(request.items()))
    if kind != "chat_get_completion":
        return f"{kind!r} requests are not supported by the local server; send chat", rid, None
    problem = body_problem(body)  # "body.messages must …" -> "chat_get_completion.messages must …"
    if problem is not None:
        return "chat_get_completion" + problem.removeprefix("body"), rid, None
    return None, rid, body
