"""``HttpApi``: the HTTP layer every Batch API client shares (the seed's and each provider's).

One retry loop (``tablebatch.api.retry``) for every call; every POST carries an
``Idempotency-Key`` that its retries reuse; a call that may have taken effect is
repeated blindly only where the caller says that is harmless. Streamed JSONL
downloads resume after a dropped connection without giving a line twice.
``wait_for_batch`` polls any client's ``get_batch`` with a growing interval
against a monotonic clock.

The API key lives only in the HTTP client's headers: not in a repr, a log line
or an exception. Time is injected (``sleep``, ``clock``) so tests never wait.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from tablebatch import __version__
from tablebatch.api.errors import (
    APIConnectionError,
    APITimeoutError,
    BatchApiError,
    UnprocessableEntityError,
    WaitTimeoutError,
    raise_for_status,
    status_error,
)
from tablebatch.api.models import Batch
from tablebatch.api.pages import Page, follow, smaller_size
from tablebatch.api.retry import NOT_PROCESSED_STATUS, RetryPolicy, parse_retry_after

log = logging.getLogger("tablebatch.api")

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
Self = TypeVar("Self", bound="HttpApi")
_UNSET: Any = object()


def new_idempotency_key() -> str:
    """A fresh key for one logical POST (its retries reuse it)."""
    return f"tb-{uuid.uuid4().hex}"


def api_key_from_env(api_key_env: str, base_url: str) -> str:
    """The key in the environment variable ``api_key_env``; a clear error if it is unset."""
    key = os.environ.get(api_key_env)
    if not key:
        raise BatchApiError(
            f"No API key: set the environment variable {api_key_env} to the key of {base_url}."
        )
    return key


class HttpApi:
    """Base of the Batch API clients: the connection, the retry loop, waiting."""

    provider = "http"
    lists_by_prefix = False  # whether the API filters ``iter_batches(name_prefix=...)`` itself

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 5,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
        key_source: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """``base_url`` ends before the resource paths (e.g. ``…/v1``); ``key_source`` names
        where the key came from (e.g. ``$XAI_API_KEY``) for the message of a 401."""
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy(max_retries=max_retries)
        self.key_source = key_source
        self._sleep = sleep
        self._clock = clock
        self._wall_clock = wall_clock
        headers = {"User-Agent": f"tablebatch/{__version__}", "Accept": "application/json"}
        self._secret = ""
        if api_key:
            api_key = api_key.strip()
            if not api_key.isascii() or not api_key.isprintable() or " " in api_key:
                raise BatchApiError(
                    f"The API key from {key_source or 'the caller'} has spaces, control or "
                    "non-ASCII characters; check that it was copied whole and alone."
                )
            headers.update(self._auth_headers(api_key))
            self._secret = api_key
        headers.update(self._extra_headers())
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )
        self._page_cap: int | None = _UNSET  # the largest page the server accepts, once known

    def _auth_headers(self, api_key: str) -> dict[str, str]:
        """How this API takes its key (a bearer token, unless a dialect says otherwise)."""
        return {"Authorization": f"Bearer {api_key}"}

    def _extra_headers(self) -> dict[str, str]:
        """Headers every call of this API carries (e.g. a version)."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    @property
    def sleep(self) -> Callable[[float], None]:
        """How this client waits (between polls and retries); whoever polls for it waits
        the same way, so that a stopped run wakes every wait at once."""
        return self._sleep

    def __enter__(self: Self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    # -- the transport loop -----------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        files: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        repeat_if_maybe_sent: bool = True,
    ) -> httpx.Response:
        """Send one logical call, retrying by the policy; raise the last error.

        With ``repeat_if_maybe_sent=False`` a failure that may have taken effect (a
        reset connection, a read timeout, a 500) is raised at once, for the caller
        to find out what happened before it tries again."""
        headers: dict[str, str] = {}
        if content is not None:
            headers["Content-Type"] = "application/json"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        query = {k: v for k, v in (params or {}).items() if v is not None}
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.request(
                    method,
                    path,
                    params=query,
                    content=content,
                    files=files,
                    data=data,
                    headers=headers,
                )
            except httpx.TransportError as exc:
                error, maybe_sent, retry_after = self._transport_error(method, path, exc, attempt)
            else:
                if response.status_code < 400:
                    return response
                error, maybe_sent, retry_after = self._status_failure(response, attempt)
            if maybe_sent and not repeat_if_maybe_sent:
                raise error
            self._wait_before_retry(method, path, error, attempt, started, retry_after)

    def _transport_error(
        self, method: str, path: str, exc: httpx.TransportError, attempt: int
    ) -> tuple[BatchApiError, bool, float | None]:
        """The error for a call that got no answer, and whether it may have taken effect."""
        if isinstance(exc, httpx.TimeoutException):
            error: APIConnectionError = APITimeoutError(
                f"{method} {path}: no answer from {self.base_url} in time ({type(exc).__name__}).",
                maybe_sent=not isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout),
                attempts=attempt,
            )
        else:
            error = APIConnectionError(
                f"{method} {path}: could not reach {self.base_url} "
                f"({type(exc).__name__}: {self._scrub(str(exc))}); check the base URL, "
                "that the server is up, and the network.",
                maybe_sent=not isinstance(exc, httpx.ConnectError),
                attempts=attempt,
            )
        error.__cause__ = exc
        return error, error.maybe_sent, None

    def _status_failure(
        self, response: httpx.Response, attempt: int
    ) -> tuple[BatchApiError, bool, float | None]:
        """The error for an error answer; raised at once unless the policy retries it."""
        error = status_error(response, attempts=attempt, key_source=self.key_source)
        if not self.retry.retryable_status(response.status_code):
            raise error
        retry_after = parse_retry_after(response.headers, self._wall_clock())
        error.retry_after = retry_after
        return error, response.status_code not in NOT_PROCESSED_STATUS, retry_after

    def _wait_before_retry(
        self,
        method: str,
        path: str,
        error: BatchApiError,
        attempt: int,
        started: float,
        retry_after: float | None,
    ) -> None:
        """Sleep before the next attempt, or raise ``error`` when the budget is spent."""
        if attempt > self.retry.max_retries:
            raise error
        delay = self.retry.delay(attempt, retry_after)
        deadline = self.retry.deadline
        if deadline is not None and self._clock() - started + delay > deadline:
            raise error
        log.info("%s %s: %s; retry %d in %.2f s", method, path, error, attempt, delay)
        self._sleep(delay)

    def _pages(
        self,
        fetch: Callable[[str | None, int | None], Page[T]],
        page_size: int | None,
        what: str,
    ) -> Iterator[Page[T]]:
        """Every page of a list (``fetch(cursor, limit)`` gets one; a ``None`` limit asks
        for the server's default), in pages of ``page_size`` or the largest the server
        accepts: a server refuses a larger one with a 422 on the first page, and the size it
        took is kept for every later list of this client."""
        while True:
            cap, limit = self._page_cap, page_size
            if cap is not _UNSET:
                limit = cap if cap is None or page_size is None else min(page_size, cap)
            pages = follow(lambda cursor, size=limit: fetch(cursor, size), what)
            try:
                first = next(pages)
            except UnprocessableEntityError:
                smaller = smaller_size(limit)
                if smaller is False:
                    raise
                log.info("%s: pages of %s refused; asking for %s", what, limit, smaller)
                self._page_cap = smaller  # type: ignore[assignment]
                continue
            yield first
            yield from pages
            return

    def _iter_lines(self, path: str) -> Iterator[str]:
        """The non-empty lines of a streamed download (JSONL). A dropped connection is
        retried by the policy, and the download read again from the start, skipping the
        lines already given (by their digest: a provider may not keep the order)."""
        given: set[bytes] = set()
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                with self._http.stream("GET", path) as response:
                    if response.status_code >= 400:
                        response.read()
                        error, _, retry_after = self._status_failure(response, attempt)
                    else:
                        for line in response.iter_lines():
                            if not line.strip():
                                continue
                            digest = hashlib.blake2b(line.encode(), digest_size=12).digest()
                            if digest in given:
                                continue
                            yield line
                            given.add(digest)
                        return
            except httpx.TransportError as exc:
                error, _, retry_after = self._transport_error("GET", path, exc, attempt)
            self._wait_before_retry("GET", path, error, attempt, started, retry_after)

    def _scrub(self, text: str) -> str:
        """``text`` without the API key, should a lower layer have quoted it."""
        return text.replace(self._secret, "***") if self._secret else text

    def _parse(self, model: type[M], response: httpx.Response) -> M:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            request = response.request
            raise BatchApiError(
                f"{request.method} {request.url.path}: the answer is not a {model.__name__} "
                f"as the {self.provider} API defines it: {exc.errors()[0].get('msg')} at "
                f"{'.'.join(map(str, exc.errors()[0].get('loc', ())))}."
            ) from exc

    def _json(self, response: httpx.Response) -> Any:
        """The JSON body of an answer, or a clear error naming the call."""
        try:
            return response.json()
        except ValueError:
            request = response.request
            raise BatchApiError(
                f"{request.method} {request.url.path}: the answer is not JSON "
                f"({response.headers.get('content-type', 'no content type')})."
            ) from None

    # -- waiting -----------------------------------------------------------------

    def get_batch(self, batch_id: str) -> Batch:
        """A batch and its counts."""
        raise NotImplementedError

    def wait_for_batch(
        self,
        batch_id: str,
        *,
        poll_interval: float = 5.0,
        max_poll_interval: float = 60.0,
        max_wait: float | None = None,
        on_progress: Callable[[Batch], None] | None = None,
        raise_on_failure: bool = False,
    ) -> Batch:
        """Poll until the batch ends and return it; raise ``WaitTimeoutError`` after ``max_wait``
        (and ``BatchFailedError``/``BatchCancelledError`` with ``raise_on_failure``).

        The interval starts at ``poll_interval`` and grows by half each poll up
        to ``max_poll_interval``. ``on_progress`` gets the batch at the first
        poll and whenever its counts or status change.
        """
        started = self._clock()
        interval = poll_interval
        last: tuple[Any, ...] | None = None
        while True:
            batch = self.get_batch(batch_id)
            state = (batch.status, batch.completed_count, batch.failed_count, batch.cancelled_count)
            if on_progress is not None and state != last:
                on_progress(batch)
            last = state
            if batch.is_terminal:
                return raise_for_status(batch) if raise_on_failure else batch
            waited = self._clock() - started
            if max_wait is not None and waited >= max_wait:
                raise WaitTimeoutError(batch, waited)
            delay = min(interval, max_poll_interval)
            if max_wait is not None:
                delay = min(delay, max_wait - waited)
            self._sleep(max(delay, 0.0))
            interval *= 1.5
