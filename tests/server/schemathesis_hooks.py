"""schemathesis hooks for ``test_schemathesis.py``: what JSON Schema cannot state.

The add-requests calls (seed, xAI) and Anthropic's create take ids that must be
unique within the call. The document says so in words; this hook gives a
generated call's repeated ids a suffix, so that a call the schema admits is one
the server takes. An id made longer than its limit only when it was within it
already (so a call generated to break the limit still breaks it).
"""

from __future__ import annotations

from typing import Any

import schemathesis

UNIQUE = {  # (method, path) -> (the list, its id field, the id's longest length)
    ("POST", "/v1/batches/{batch_id}/requests"): ("requests", "custom_id", 512),
    ("POST", "/xai/v1/batches/{batch_id}/requests"): ("batch_requests", "batch_request_id", 512),
    ("POST", "/anthropic/v1/messages/batches"): ("requests", "custom_id", 64),
}


def unique_ids(items: list[Any], key: str, longest: int) -> None:
    """Give each repeated non-empty string id a suffix that makes it unique, in place."""
    seen: set[str] = set()
    for i, item in enumerate(items):
        value = item.get(key) if isinstance(item, dict) else None
        if not isinstance(value, str) or not value:
            continue
        n = i
        while value in seen:
            suffix = str(n)
            value = (
                value[: longest - len(suffix)] + suffix if len(value) <= longest else value + suffix
            )
            n += len(items)
        seen.add(value)
        item[key] = value


@schemathesis.hook
def map_case(ctx: Any, case: Any) -> Any:
    """Make the ids of a generated call unique where the server asks for that."""
    rule = UNIQUE.get((case.method.upper(), case.operation.path))
    body = case.body
    if rule is not None and isinstance(body, dict) and isinstance(body.get(rule[0]), list):
        unique_ids(body[rule[0]], rule[1], rule[2])
    return case
