"""Checks of an add-requests call, done by hand because it is the hot path.

The rules are those of ``tablebatch.api.models.AddRequestsBody`` (which the
OpenAPI schema shows); checking them in a plain loop is several times faster
than building models for thousands of items. The whole call is checked before
anything is stored, and every bad item is named.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from tablebatch.server.errors import InvalidRequest, PayloadTooLarge
from tablebatch.server.settings import ServerLimits

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
NEEDS_CONTENT = frozenset({"system", "developer", "user"})
MAX_CUSTOM_ID = 512
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SHOWN = 10


def body_problem(body: Any) -> str | None:
    """What is wrong with a chat-completions body the backends could not take, or None."""
    if not isinstance(body, dict):
        return "body must be an object with model and messages"
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return "body.model must be a non-empty string"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "body.messages must be a non-empty list"
    for j, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"body.messages[{j}] must be an object with role and content"
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:  # a dict or list is not hashable
            return f"body.messages[{j}].role must be one of {', '.join(sorted(ROLES))}"
        content = message.get("content")
        if content is None and role in NEEDS_CONTENT:
            return f"body.messages[{j}].content is missing"
        if content is not None and not isinstance(content, str | list):
            return f"body.messages[{j}].content must be a string or a list of parts"
    return None


def _summary(problems: list[str], total: int, what: str) -> str:
    shown = "; ".join(problems[:_SHOWN])
    more = f"; and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
    return f"{len(problems)} of {total} requests {what}; nothing was added: {shown}{more}."


def parse_add_requests(raw: bytes, limits: ServerLimits) -> list[tuple[str, bytes]]:
    """Parse and check an add-requests body into ``(custom_id, body JSON)`` pairs."""
    if len(raw) > limits.max_bytes_per_call:
        raise PayloadTooLarge(
            f"This call has {len(raw)} bytes; the limit is {limits.max_bytes_per_call} bytes per "
            "call. Send the requests in smaller calls."
        )
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The body is not valid JSON: {exc}.") from None
    shape = 'The body must be {"requests": [{"custom_id": "...", "body": {...}}, ...]}'
    if not isinstance(data, dict) or not isinstance(data.get("requests"), list):
        raise InvalidRequest(shape + ".")
    unknown = sorted(set(data) - {"requests"})
    if unknown:
        raise InvalidRequest(f"{shape}; unknown field(s): {', '.join(unknown)}.")
    items = data["requests"]
    if not items:
        raise InvalidRequest("requests is empty: send at least one request.")
    if len(items) > limits.max_requests_per_call:
        raise PayloadTooLarge(
            f"This call has {len(items)} requests; the limit is {limits.max_requests_per_call} "
            "per call. Send them in smaller calls."
        )
    problems: list[str] = []
    too_large: list[str] = []
    bad: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    parsed: list[tuple[str, bytes]] = []
    for i, item in enumerate(items):
        custom_id = item.get("custom_id") if isinstance(item, dict) else None
        label = f"requests[{i}]" + (
            f" (custom_id {custom_id!r})" if isinstance(custom_id, str) else ""
        )
        if not isinstance(item, dict):
            problem = "must be an object with custom_id and body"
        elif not isinstance(custom_id, str) or not custom_id:
            problem = "custom_id must be a non-empty string"
        elif len(custom_id) > MAX_CUSTOM_ID:
            problem = f"custom_id is longer than {MAX_CUSTOM_ID} characters"
        elif _CONTROL.search(custom_id):
            problem = "custom_id must not contain control characters"
        elif custom_id in seen:
            problem = f"custom_id repeats requests[{seen[custom_id]}]; custom_ids must be unique"
        else:
            extra = sorted(set(item) - {"custom_id", "body"})
            problem = (
                f"unknown field(s) {', '.join(extra)}" if extra else body_problem(item.get("body"))
            )
        if problem is not None:
            problems.append(f"{label}: {problem}")
            bad.append({"index": i, "custom_id": custom_id if isinstance(custom_id, str) else None})
            continue
        seen[custom_id] = i
        body = orjson.dumps(item["body"])
        if len(body) > limits.max_request_bytes:
            too_large.append(f"{label}: body has {len(body)} bytes")
            continue
        parsed.append((custom_id, body))
    if problems:
        raise InvalidRequest(_summary(problems, len(items), "are invalid"), items=bad)
    if too_large:
        raise PayloadTooLarge(
            _summary(too_large, len(items), f"are over {limits.max_request_bytes} bytes"),
        )
    return parsed
