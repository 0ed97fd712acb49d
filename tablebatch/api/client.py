"""``BatchClient``: every call of the Batch API, retried, paginated and idempotent.

It is built to be trusted with a paid account:

- every call goes through one retry loop (``tablebatch.api.retry``); every POST
  carries an ``Idempotency-Key`` that its retries reuse;
- a call that may have taken effect (a reset connection, a read timeout, a 500)
  is repeated blindly only where that is harmless. Adding requests is not: the
  client then asks the batch which ``custom_id``s it holds and sends only the
  rest, so no request is added twice even by a server that ignores the key;
- ``iter_*`` walk every page, so a caller never handles a cursor;
- ``add_requests`` splits any number of requests into calls that fit the
  per-call limits, by count and by bytes;
- ``wait_for_batch`` polls with a growing interval against a monotonic clock.

The API key lives only in the HTTP client's headers: not in a repr, a log line
or an exception. Time is injected (``sleep``, ``clock``) so tests never wait.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel

from tablebatch.api.adding import (
    DEFAULT_BYTES_PER_CALL,
    DEFAULT_REQUESTS_PER_CALL,
    AddsInCalls,
    RequestLike,
    encode_request,
)
from tablebatch.api.errors import (
    BatchApiError,
    ConflictError,
)
from tablebatch.api.http import HttpApi, api_key_from_env, new_idempotency_key
from tablebatch.api.models import (
    CHAT_COMPLETIONS,
    Batch,
    BatchList,
    BatchRequest,
    BatchRequestList,
    BatchResult,
    BatchResultList,
    BatchStatus,
    RequestStatus,
)
from tablebatch.api.pages import Page
from tablebatch.api.protocol import AddResult, Limits

log = logging.getLogger("tablebatch.api")

M = TypeVar("M", bound=BaseModel)


class BatchClient(AddsInCalls, HttpApi):
    """A client for one Batch API (the seed's shape), e.g. ``BatchClient(server.url)``."""

    provider = "seed"
    limits = Limits()  # the seed's API states none: the job's batch settings decide
    lists_by_prefix = True  # the local server's extension; learned False from one that ignores it

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        max_requests_per_call: int = DEFAULT_REQUESTS_PER_CALL,
        max_bytes_per_call: int = DEFAULT_BYTES_PER_CALL,
        **options: Any,
    ) -> None:
        """``options`` are those of ``HttpApi`` (timeout, max_retries, transport, retry,
        key_source, sleep, clock, wall_clock)."""
        super().__init__(base_url, api_key, **options)
        self.max_requests_per_call = max_requests_per_call
        self.max_bytes_per_call = max_bytes_per_call

    @classmethod
    def from_env(
        cls, base_url: str, api_key_env: str = "XAI_API_KEY", **options: Any
    ) -> BatchClient:
        """A client whose key is read from the environment variable ``api_key_env``."""
        key = api_key_from_env(api_key_env, base_url)
        return cls(base_url, key, key_source=f"${api_key_env}", **options)

    def _get(self, path: str, model: type[M], **params: Any) -> M:
        return self._parse(model, self._request("GET", path, params=params))

    def _post(self, path: str, model: type[M], payload: Mapping[str, Any] | None = None) -> M:
        content = orjson.dumps(payload) if payload is not None else b""
        response = self._request(
            "POST", path, content=content, idempotency_key=new_idempotency_key()
        )
        return self._parse(model, response)

    def _paginate(self, path: str, model: type[Any], page_size: int, **params: Any) -> Iterator:
        """Every item of a list of the seed's shape (``data``, ``has_more``), across pages."""

        def fetch(cursor: str | None, limit: int | None) -> Page[Any]:
            page = self._get(path, model, limit=limit, after=cursor, **params)
            return Page.by_last_id(page.data, page.has_more, what=f"GET {path}")

        for page in self._pages(fetch, page_size, f"GET {path}"):
            yield from page.items

    # -- batches -----------------------------------------------------------------

    def create_batch(
        self,
        name: str,
        *,
        model: str | None = None,
        description: str | None = None,
        endpoint: str = CHAT_COMPLETIONS,
    ) -> Batch:
        """Create an empty batch."""
        payload: dict[str, Any] = {"name": name, "endpoint": endpoint}
        if model is not None:
            payload["model"] = model
        if description is not None:
            payload["description"] = description
        return self._post("/batches", Batch, payload)

    def get_batch(self, batch_id: str) -> Batch:
        """A batch and its counts."""
        return self._get(f"/batches/{batch_id}", Batch)

    def list_batches(
        self,
        *,
        limit: int | None = None,
        after: str | None = None,
        status: BatchStatus | None = None,
        name: str | None = None,
        name_prefix: str | None = None,
    ) -> BatchList:
        """One page of batches, newest first (``name`` and ``name_prefix`` are extensions of
        the local server; another server may ignore them)."""
        return self._get(
            "/batches",
            BatchList,
            limit=limit,
            after=after,
            status=status,
            name=name,
            name_prefix=name_prefix,
        )

    def iter_batches(
        self,
        *,
        status: BatchStatus | None = None,
        name: str | None = None,
        name_prefix: str | None = None,
        page_size: int = 100,
    ) -> Iterator[Batch]:
        """Every batch (of a status, of a name, whose name starts with a prefix), newest
        first, across pages. The filters are applied here too: a server may ignore them
        (``name`` and ``name_prefix`` are the local server's extensions), and one that shows
        it ignores the prefix is no longer taken to filter by it (``lists_by_prefix``)."""

        def fetch(cursor: str | None, limit: int | None) -> Page[Batch]:
            page = self.list_batches(
                limit=limit, after=cursor, status=status, name=name, name_prefix=name_prefix
            )
            return Page.by_last_id(page.data, page.has_more, what="GET /batches")

        for page in self._pages(fetch, page_size, "GET /batches"):
            for batch in page.items:
                if name_prefix is not None and not batch.name.startswith(name_prefix):
                    self.lists_by_prefix = False
                    continue
                if name is not None and batch.name != name:
                    continue
                if status is not None and batch.status != status:
                    continue
                yield batch

    def find_batch(self, name: str) -> Batch | None:
        """The newest batch with exactly this name, or None: how a job finds its batch again."""
        return next(self.iter_batches(name=name), None)

    def start(self, batch_id: str) -> Batch:
        """Start processing a batch; starting one that already started returns it as it is."""
        try:
            return self._post(f"/batches/{batch_id}/start", Batch)
        except ConflictError:
            batch = self.get_batch(batch_id)
            if batch.status in ("processing", "completed", "failed"):
                return batch  # an earlier attempt of this call went through
            raise

    def cancel(self, batch_id: str) -> Batch:
        """Cancel a batch; cancelling one already cancelling or cancelled returns it."""
        try:
            return self._post(f"/batches/{batch_id}/cancel", Batch)
        except ConflictError:
            batch = self.get_batch(batch_id)
            if batch.status in ("cancelling", "cancelled"):
                return batch
            raise

    # -- requests ----------------------------------------------------------------

    def list_requests(
        self,
        batch_id: str,
        *,
        limit: int | None = None,
        after: str | None = None,
        status: RequestStatus | None = None,
    ) -> BatchRequestList:
        """One page of a batch's requests, in the order they were added."""
        return self._get(
            f"/batches/{batch_id}/requests",
            BatchRequestList,
            limit=limit,
            after=after,
            status=status,
        )

    def iter_requests(
        self, batch_id: str, *, status: RequestStatus | None = None, page_size: int = 1000
    ) -> Iterator[BatchRequest]:
        """Every request of a batch (of a status), across pages."""
        yield from self._paginate(
            f"/batches/{batch_id}/requests", BatchRequestList, page_size, status=status
        )

    def add_requests(
        self, batch_id: str, requests: Iterable[RequestLike | tuple[str, bytes]]
    ) -> AddResult:
        """Add requests to a batch, in calls that fit the limits, each request once.

        A request whose ``custom_id`` the batch already holds is not sent again
        (counted in ``already_present``): adding is safe to repeat after a crash.
        """
        encoded = [encode_request(r) for r in requests]
        seen: set[str] = set()
        for custom_id, _ in encoded:
            if custom_id in seen:
                raise ValueError(f"custom_id {custom_id!r} is given twice; custom_ids are unique.")
            seen.add(custom_id)
        return self._add_in_calls(batch_id, encoded)

    def _wrap(self, items: list[bytes]) -> bytes:
        return b'{"requests":[' + b",".join(items) + b"]}"

    def _held(self, batch_id: str) -> set[str]:
        """The custom_ids the batch holds."""
        return {r.custom_id for r in self.iter_requests(batch_id, page_size=1000)}

    # -- results -----------------------------------------------------------------

    def list_results(
        self, batch_id: str, *, limit: int | None = None, after: str | None = None
    ) -> BatchResultList:
        """One page of a batch's results, in the order they were written."""
        return self._get(f"/batches/{batch_id}/results", BatchResultList, limit=limit, after=after)

    def iter_results(self, batch_id: str, *, page_size: int = 1000) -> Iterator[BatchResult]:
        """Every result of a batch, across pages."""
        yield from self._paginate(f"/batches/{batch_id}/results", BatchResultList, page_size)

    def iter_result_pages(
        self, batch_id: str, *, page_size: int = 1000
    ) -> Iterator[list[dict[str, Any]]]:
        """Every page of a batch's results as plain dicts: for callers that read a million
        results and want them fast, not as models."""
        path = f"/batches/{batch_id}/results"

        def fetch(cursor: str | None, limit: int | None) -> Page[dict[str, Any]]:
            response = self._request("GET", path, params={"limit": limit, "after": cursor})
            try:
                page = orjson.loads(response.content)
                data, more = page["data"], page["has_more"]
                if not isinstance(data, list) or not isinstance(more, bool):
                    raise TypeError
            except (orjson.JSONDecodeError, KeyError, TypeError):
                raise BatchApiError(f"GET {path}: the answer is not a list of results.") from None
            return Page.by_last_id(data, more, what=f"GET {path}")

        for page in self._pages(fetch, page_size, f"GET {path}"):
            yield page.items
