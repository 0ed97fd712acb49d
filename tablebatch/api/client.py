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

from tablebatch.api.errors import (
    APIConnectionError,
    APIStatusError,
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
    NewRequest,
    RequestStatus,
)
from tablebatch.api.protocol import AddResult, Limits
from tablebatch.crash import crash_point

log = logging.getLogger("tablebatch.api")

M = TypeVar("M", bound=BaseModel)
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


class BatchClient(HttpApi):
    """A client for one Batch API (the seed's shape), e.g. ``BatchClient(server.url)``."""

    provider = "seed"
    limits = Limits()  # the seed's API states none: the job's batch settings decide

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
        after: str | None = None
        while True:
            page = self._get(path, model, limit=page_size, after=after, **params)
            yield from page.data
            if not page.has_more:
                return
            if not page.data:
                raise BatchApiError(f"GET {path}: the server said has_more but sent no items.")
            if page.data[-1].id == after:
                raise BatchApiError(f"GET {path}: the cursor did not move past {after!r}.")
            after = page.data[-1].id

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
        first, across pages. The filters are applied here too: a server may ignore them."""
        pages = self._paginate(
            "/batches", BatchList, page_size, status=status, name=name, name_prefix=name_prefix
        )
        for batch in pages:
            if name is not None and batch.name != name:
                continue
            if name_prefix is not None and not batch.name.startswith(name_prefix):
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
        result = AddResult()
        for chunk in chunk_requests(encoded, self.max_requests_per_call, self.max_bytes_per_call):
            self._add_chunk(batch_id, chunk, result)
            crash_point("mid-add")
        return result

    def _add_chunk(self, batch_id: str, chunk: list[tuple[str, bytes]], result: AddResult) -> None:
        path = f"/batches/{batch_id}/requests"
        pending = chunk
        rounds = 0
        started = self._clock()
        while pending:
            payload = b'{"requests":[' + b",".join(item for _, item in pending) + b"]}"
            try:
                result.calls += 1
                self._request(
                    "POST",
                    path,
                    content=payload,
                    idempotency_key=new_idempotency_key(),
                    repeat_if_maybe_sent=False,
                )
            except ConflictError as exc:
                present = set(exc.custom_ids) or self._present(batch_id, pending)
                if not present:
                    raise  # a conflict of status, not of custom_ids
            except (APIConnectionError, APIStatusError) as exc:
                rounds += 1
                if isinstance(exc, APIStatusError) and exc.status_code < 500:
                    raise
                if rounds > self.retry.max_retries:
                    raise
                delay = self.retry.delay(rounds, getattr(exc, "retry_after", None))
                deadline = self.retry.deadline
                if deadline is not None and self._clock() - started + delay > deadline:
                    raise
                log.info("adding to %s: %s; checking what the batch holds", batch_id, exc)
                self._sleep(delay)
                present = self._present(batch_id, pending)
            else:
                result.added += len(pending)
                return
            before = len(pending)
            pending = [item for item in pending if item[0] not in present]
            if len(pending) == before and not rounds:
                raise BatchApiError(
                    f"POST {path}: the server reported custom_ids that this call did not send."
                )
            result.already_present += before - len(pending)

    def _present(self, batch_id: str, pending: list[tuple[str, bytes]]) -> set[str]:
        """Which of ``pending``'s custom_ids the batch already holds."""
        wanted = {custom_id for custom_id, _ in pending}
        return {r.custom_id for r in self.iter_requests(batch_id, page_size=1000)} & wanted

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
        after: str | None = None
        while True:
            response = self._request("GET", path, params={"limit": page_size, "after": after})
            try:
                page = orjson.loads(response.content)
                data, more = page["data"], page["has_more"]
                if not isinstance(data, list) or not isinstance(more, bool):
                    raise TypeError
            except (orjson.JSONDecodeError, KeyError, TypeError):
                raise BatchApiError(f"GET {path}: the answer is not a list of results.") from None
            yield data
            if not more:
                return
            if not data or data[-1].get("id") == after:
                raise BatchApiError(f"GET {path}: the cursor did not move (has_more, no items).")
            after = data[-1]["id"]
