"""Adding requests to a batch in calls that fit, each request once: the one
add-and-reconcile loop the clients that add requests share (the seed's and xAI's).

A call whose outcome is unknown (a connection lost after the request went out, a
5xx that may have taken effect) is never repeated blind: the batch is asked which
custom_ids it holds, and only the rest are sent again — so no request is added
twice, even by a server that ignores the idempotency key.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from tablebatch.api.errors import (
    APIConnectionError,
    APIStatusError,
    BatchApiError,
    ConflictError,
    outcome_unknown,
)
from tablebatch.api.http import HttpApi, new_idempotency_key
from tablebatch.api.models import NewRequest
from tablebatch.api.protocol import AddResult
from tablebatch.crash import crash_point

log = logging.getLogger("tablebatch.api")

RequestLike = Mapping[str, Any] | NewRequest
DEFAULT_REQUESTS_PER_CALL = 1000
DEFAULT_BYTES_PER_CALL = 8 * 2**20
_WRAPPER_BYTES = len(b'{"requests":[]}')


def encode_request(request: RequestLike | tuple[str, bytes]) -> tuple[str, bytes]:
    """A request as ``(custom_id, its JSON)``, checked to have a custom_id and a body.

    A ``(custom_id, bytes)`` pair is taken as already encoded."""
    if isinstance(request, tuple):
        custom_id, item = request
        if not isinstance(custom_id, str) or not isinstance(item, bytes):
            raise ValueError("an encoded request is a (custom_id, JSON bytes) pair")
        if not item.startswith(b'{"custom_id":' + orjson.dumps(custom_id) + b","):
            raise ValueError(f"the encoded request of {custom_id!r} does not start with it")
        return custom_id, item
    if isinstance(request, NewRequest):
        return request.custom_id, orjson.dumps(request.model_dump(mode="json", exclude_unset=True))
    custom_id = request.get("custom_id")
    body = request.get("body")
    if not isinstance(custom_id, str) or not custom_id or not isinstance(body, Mapping):
        raise ValueError(f"a request needs a custom_id (string) and a body (object): {request!r}")
    return custom_id, orjson.dumps({"custom_id": custom_id, "body": body})


def chunk_requests(
    encoded: list[tuple[str, bytes]], max_count: int, max_bytes: int
) -> Iterator[list[tuple[str, bytes]]]:
    """Split encoded requests into runs that fit ``max_count`` and ``max_bytes`` per call."""
    chunk: list[tuple[str, bytes]] = []
    size = _WRAPPER_BYTES
    for custom_id, item in encoded:
        item_size = len(item) + 1  # the comma
        if item_size + _WRAPPER_BYTES > max_bytes:
            raise ValueError(
                f"request {custom_id!r} has {len(item)} bytes, more than one call may carry "
                f"({max_bytes} bytes); shorten its prompt or raise max_bytes_per_call."
            )
        if chunk and (len(chunk) >= max_count or size + item_size > max_bytes):
            yield chunk
            chunk, size = [], _WRAPPER_BYTES
        chunk.append((custom_id, item))
        size += item_size
    if chunk:
        yield chunk


class AddsInCalls(HttpApi):
    """The add loop of a client whose batches take requests in calls (a mixin of
    ``HttpApi``): a subclass says how a call's items are wrapped (``_wrap``), where they
    go (``_add_path``) and which custom_ids a batch holds (``_held``)."""

    max_requests_per_call: int = DEFAULT_REQUESTS_PER_CALL
    max_bytes_per_call: int = DEFAULT_BYTES_PER_CALL

    def _wrap(self, items: list[bytes]) -> bytes:
        raise NotImplementedError

    def _held(self, batch_id: str) -> set[str]:
        raise NotImplementedError

    def _add_path(self, batch_id: str) -> str:
        return f"/batches/{batch_id}/requests"

    def _add_in_calls(
        self, batch_id: str, encoded: list[tuple[str, bytes]], result: AddResult | None = None
    ) -> AddResult:
        """Send ``(custom_id, item)`` pairs in calls that fit, each once."""
        result = result or AddResult()
        for chunk in chunk_requests(encoded, self.max_requests_per_call, self.max_bytes_per_call):
            self._add_chunk(batch_id, chunk, result)
            crash_point("mid-add")
        return result

    def _add_chunk(self, batch_id: str, chunk: list[tuple[str, bytes]], result: AddResult) -> None:
        path = self._add_path(batch_id)
        pending = chunk
        started = self._clock()
        attempt = 0
        while pending:
            payload = self._wrap([item for _, item in pending])
            try:
                result.calls += 1
                self._request(
                    "POST",
                    path,
                    content=payload,
                    idempotency_key=new_idempotency_key(),
                    repeat_if_maybe_sent=False,
                )
            except ConflictError as exc:  # the batch holds some of these already
                held = set(exc.custom_ids) or self._held(batch_id)
                before = len(pending)
                pending = [item for item in pending if item[0] not in held]
                if len(pending) == before:
                    if not exc.custom_ids:
                        raise  # a conflict of status, not of custom_ids
                    raise BatchApiError(
                        f"POST {path}: the server reported custom_ids that this call did not send."
                    ) from exc
                result.already_present += before - len(pending)
            except (APIConnectionError, APIStatusError) as exc:
                if not outcome_unknown(exc):
                    raise
                attempt += 1
                retry_after = getattr(exc, "retry_after", None)
                self._wait_before_retry("POST", path, exc, attempt, started, retry_after)
                log.info("adding to %s: %s; checking what the batch holds", batch_id, exc)
                held = self._held(batch_id)
                before = len(pending)
                pending = [item for item in pending if item[0] not in held]
                result.already_present += before - len(pending)
            else:
                result.added += len(pending)
                return
