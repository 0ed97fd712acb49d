"""The xAI REST batch dialect (the contract: xai-org/xai-proto ``batch.proto`` and xAI's REST
docs).

``POST /batches {name}`` → ``{batch_id, name, create_time, state, ...}``; requests
are added with ``POST /batches/{id}/requests {batch_requests: [{batch_request_id,
batch_request: {chat_get_completion: <chat body>}}]}`` (an empty answer) and run
as they arrive: there is no start. A batch has no status string, only ``state
{num_requests, num_pending, num_success, num_error, num_cancelled}``,
``cancel_time`` and ``expire_time``. Lists page with ``limit`` and an opaque
``pagination_token`` (absent or empty on the last page) over ``batches``,
``batch_request_metadata`` and ``results``; results are
``{batch_request_id, batch_result: {response: {chat_get_completion: ...}} |
{error: ...}}``, in no order. Cancel is ``POST /batches/{id}:cancel``.

- **Statuses** (from the state): no requests is ``created``; until this client
  calls ``start`` a batch is ``pending`` (xAI cannot say whether adding is over,
  so a re-run that finds a batch adds what it lacks before waiting); after it,
  ``processing`` while ``num_pending > 0``, then ``completed``. A ``cancel_time``
  makes it ``cancelling``, then ``cancelled`` once nothing is pending; cancelled
  by xAI (``cancel_by_xai_message``) is ``failed``, with that message. A batch
  without its state, or with counts that are not numbers, stops with an error.
- **Never twice**: batches have a ``name``; a re-run lists them and matches it,
  and adds only the ``batch_request_id``s the batch does not hold (read from its
  request metadata), also after an add whose answer was lost.
- **Limits**: none documented per batch; the job's batch settings decide.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import httpx
import orjson

from tablebatch.api.adding import DEFAULT_BYTES_PER_CALL, DEFAULT_REQUESTS_PER_CALL, AddsInCalls
from tablebatch.api.dialects.common import (
    IdCodec,
    cancelled,
    completed,
    error_text,
    failed,
    parse_time,
    unique,
)
from tablebatch.api.errors import (
    AuthenticationError,
    BatchApiError,
    status_error,
)
from tablebatch.api.http import HttpApi, new_idempotency_key
from tablebatch.api.models import Batch, BatchStatus, ErrorInfo
from tablebatch.api.pages import Page
from tablebatch.api.protocol import AddResult, Limits

log = logging.getLogger("tablebatch.api")

MAX_PAGE = 1000
GRPC_CODES = {  # google.rpc.Code numbers, as a failed request's error carries them
    1: "cancelled",
    2: "unknown",
    3: "invalid_argument",
    4: "deadline_exceeded",
    5: "not_found",
    7: "permission_denied",
    8: "resource_exhausted",
    9: "failed_precondition",
    13: "internal",
    14: "unavailable",
    16: "unauthenticated",
}


class XaiBatches(AddsInCalls, HttpApi):
    """The job's Batch API over xAI's REST batches (``base_url`` e.g. ``https://api.x.ai/v1``)."""

    provider = "xai"
    limits = Limits()

    def __init__(
        self,
        *args: Any,
        max_requests_per_call: int = DEFAULT_REQUESTS_PER_CALL,
        max_bytes_per_call: int = DEFAULT_BYTES_PER_CALL,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.max_requests_per_call = max_requests_per_call
        self.max_bytes_per_call = max_bytes_per_call
        self.ids = IdCodec("xai")  # any string is a batch_request_id
        self._started: set[str] = set()
        self._lock = threading.Lock()

    # -- batches -------------------------------------------------------------------

    def _status_failure(
        self, response: httpx.Response, attempt: int
    ) -> tuple[BatchApiError, bool, float | None]:
        """xAI answers a wrong key with a 400: it is told as an ``AuthenticationError`` that
        says where the key came from, like a 401."""
        if response.status_code == 400 and "api key" in response.text.lower():
            error = status_error(response, attempts=attempt, key_source=self.key_source)
            where = self.key_source or "the api_key given to the client"
            raise AuthenticationError(
                f"{error} Check the API key in {where}.",
                status_code=400,
                server_message=error.server_message,
                body=error.body,
                attempts=attempt,
            )
        return super()._status_failure(response, attempt)

    def _batch(self, raw: Any) -> Batch:
        """An xAI batch as the seed's ``Batch``; its status is read from its state."""
        if not isinstance(raw, dict) or not isinstance(raw.get("batch_id"), str):
            raise BatchApiError(f"xai answered {str(raw)[:200]!r}, which is not a batch.")
        batch_id = raw["batch_id"]
        state = raw.get("state")
        keys = ("num_requests", "num_pending", "num_success", "num_error", "num_cancelled")
        try:
            n, pending, success, error, stopped = (int((state or {}).get(k) or 0) for k in keys)
            if not isinstance(state, dict):
                raise TypeError
        except (TypeError, ValueError):
            raise BatchApiError(
                f"xai batch {batch_id} came without a readable state ({str(state)[:200]!r}); "
                "tablebatch cannot tell its progress and stops rather than guess."
            ) from None
        with self._lock:
            started = batch_id in self._started
        status: BatchStatus
        problem = None
        if raw.get("cancel_by_xai_message"):
            status = "failed"
            problem = ErrorInfo(type="cancelled_by_xai", message=str(raw["cancel_by_xai_message"]))
        elif raw.get("cancel_time"):
            status = "cancelling" if pending else "cancelled"
        elif n == 0:
            status = "created"
        elif not started:
            status = "pending"
        else:
            status = "processing" if pending else "completed"
        return Batch(
            id=batch_id,
            name=str(raw.get("name") or ""),
            status=status,
            created_at=parse_time(raw.get("create_time")),
            cancelled_at=parse_time(raw.get("cancel_time")),
            request_count=n,
            completed_count=success,
            failed_count=error,
            cancelled_count=stopped,
            error=problem,
            expire_time=raw.get("expire_time"),
        )

    def create_batch(
        self, name: str, *, model: str | None = None, description: str | None = None
    ) -> Batch:
        """Create an empty batch named ``name`` (xAI keeps no model or description)."""
        response = self._request(
            "POST",
            "/batches",
            content=orjson.dumps({"name": name}),
            idempotency_key=new_idempotency_key(),
        )  # a repeat makes a second, empty batch: the job keeps the oldest and cancels it
        return self._batch(self._json(response))

    def get_batch(self, batch_id: str) -> Batch:
        """A batch and its counts."""
        return self._batch(self._json(self._request("GET", f"/batches/{batch_id}")))

    def _lists(self, path: str, key: str, page_size: int) -> Iterator[list[Any]]:
        """The items under ``key`` of every page of a list, following ``pagination_token``."""

        def fetch(token: str | None, limit: int | None) -> Page[Any]:
            params = {"limit": min(limit or MAX_PAGE, MAX_PAGE), "pagination_token": token}
            page = self._json(self._request("GET", path, params=params))
            items = page.get(key) if isinstance(page, dict) else None
            if items is None and isinstance(page, dict) and not page.get("pagination_token"):
                items = []  # an empty list may be left out
            if not isinstance(items, list):
                raise BatchApiError(f"GET {path}: the answer has no list {key!r}.")
            return Page(items, page.get("pagination_token") or None)

        for page in self._pages(fetch, page_size, f"GET {path}"):
            yield page.items

    def iter_batches(
        self,
        *,
        status: BatchStatus | None = None,
        name: str | None = None,
        name_prefix: str | None = None,
        page_size: int = 100,
    ) -> Iterator[Batch]:
        """Every batch (of a status, of exactly this name, whose name starts with
        ``name_prefix``), newest first (xAI filters nothing: the names are matched here)."""
        if name is None and name_prefix is None:
            for items in self._lists("/batches", "batches", page_size):
                for raw in items:
                    batch = self._listed(raw)
                    if status is None or batch.status == status:
                        yield batch
            return
        found = [
            self._listed(raw)
            for items in self._lists("/batches", "batches", page_size)
            for raw in items
            if isinstance(raw, dict)
            and isinstance(raw.get("name"), str)
            and (name is None or raw["name"] == name)
            and (name_prefix is None or raw["name"].startswith(name_prefix))
        ]
        found.sort(key=lambda b: b.created_at.timestamp() if b.created_at else 0.0, reverse=True)
        yield from (b for b in found if status is None or b.status == status)

    def _listed(self, raw: Any) -> Batch:
        """A batch from a list; a list may leave out the state, then the batch is fetched."""
        if isinstance(raw, dict) and not isinstance(raw.get("state"), dict):
            return self.get_batch(str(raw.get("batch_id")))
        return self._batch(raw)

    def find_batch(self, name: str) -> Batch | None:
        """The newest batch with exactly this name, or None."""
        return next(self.iter_batches(name=name), None)

    def start(self, batch_id: str) -> Batch:
        """xAI runs requests as they are added: this only tells the client that adding is
        over, so that the batch reads ``processing``/``completed`` from now on."""
        with self._lock:
            self._started.add(batch_id)
        return self.get_batch(batch_id)

    def cancel(self, batch_id: str) -> Batch:
        """Cancel a batch (``POST /batches/{id}:cancel``); answered requests keep their results."""
        response = self._request(
            "POST", f"/batches/{batch_id}:cancel", idempotency_key=new_idempotency_key()
        )
        if response.content.strip():
            return self._batch(self._json(response))
        return self.get_batch(batch_id)

    # -- requests ------------------------------------------------------------------

    def request_ids(self, batch_id: str) -> set[str]:
        """The custom_ids the batch holds (from its request metadata)."""
        ids: set[str] = set()
        path = f"/batches/{batch_id}/requests"
        for items in self._lists(path, "batch_request_metadata", MAX_PAGE):
            for item in items:
                if isinstance(item, dict) and isinstance(item.get("batch_request_id"), str):
                    ids.add(self.ids.decode(item["batch_request_id"]))
        return ids

    def add_requests(self, batch_id: str, requests: Iterable[Any]) -> AddResult:
        """Add requests in calls that fit, each once: ids the batch holds are skipped, and an
        add whose answer was lost is checked against the batch before it is sent again."""
        decoded = unique(requests)
        result = AddResult()
        if not decoded:
            return result
        if self.get_batch(batch_id).request_count:
            present = self.request_ids(batch_id)
            result.already_present = sum(1 for c, _ in decoded if c in present)
            decoded = [(c, body) for c, body in decoded if c not in present]
        encoded = [
            (
                custom_id,
                orjson.dumps(
                    {
                        "batch_request_id": self.ids.encode(custom_id),
                        "batch_request": {"chat_get_completion": body},
                    }
                ),
            )
            for custom_id, body in decoded
        ]
        return self._add_in_calls(batch_id, encoded, result)

    def _wrap(self, items: list[bytes]) -> bytes:
        return b'{"batch_requests":[' + b",".join(items) + b"]}"

    def _held(self, batch_id: str) -> set[str]:
        return self.request_ids(batch_id)

    # -- results -------------------------------------------------------------------

    def _result(self, raw: Any, batch_id: str) -> dict[str, Any]:
        if not isinstance(raw, dict) or not isinstance(raw.get("batch_request_id"), str):
            raise BatchApiError(f"xai batch {batch_id}: {str(raw)[:200]!r} is not a result.")
        custom_id = self.ids.decode(raw["batch_request_id"])
        outcome = raw.get("batch_result") if isinstance(raw.get("batch_result"), dict) else raw
        response = outcome.get("response")
        if isinstance(response, dict):
            chat = response.get("chat_get_completion") or response.get("completion_response")
            if isinstance(chat, dict):
                return completed(custom_id, chat)
        error = outcome.get("error") or raw.get("error")
        if error:
            code = error.get("code") if isinstance(error, dict) else None
            kind, message = error_text(error)
            if isinstance(code, int) and code in GRPC_CODES:
                kind = GRPC_CODES[code]
            if kind.lower() in ("cancelled", "canceled"):
                return cancelled(custom_id, batch_id)
            return failed(custom_id, kind, message)
        raise BatchApiError(
            f"xai batch {batch_id}: the result of {raw['batch_request_id']!r} has neither a "
            "chat completion nor an error."
        )

    def iter_result_pages(
        self, batch_id: str, *, page_size: int = 1000
    ) -> Iterator[list[dict[str, Any]]]:
        """Every result of the batch, in pages as xAI gives them."""
        for items in self._lists(f"/batches/{batch_id}/results", "results", page_size):
            if items:
                yield [self._result(raw, batch_id) for raw in items]
