"""Errors of the Batch API client, one tree:

    BatchApiError
    ├── APIStatusError               the server answered an error status
    │   ├── BadRequestError          400
    │   ├── AuthenticationError      401 (says where the key comes from)
    │   ├── PermissionDeniedError    403
    │   ├── NotFoundError            404
    │   ├── ConflictError            409 (``custom_ids`` the batch already holds, if any)
    │   ├── PayloadTooLargeError     413
    │   ├── UnprocessableEntityError 422
    │   ├── RateLimitError           429
    │   └── ServerError              5xx
    ├── APIConnectionError           no answer: connection refused, reset, or dropped
    │   └── APITimeoutError          no answer in time
    ├── BatchFailedError             the batch ended ``failed``
    ├── BatchCancelledError          the batch ended ``cancelled``
    └── WaitTimeoutError             the batch did not end within ``max_wait``

Status errors carry the status code, the server's error type and message, and
how many attempts were made. No error ever holds the API key.
"""

from __future__ import annotations

from typing import Any

import httpx

from tablebatch.api.models import Batch


class BatchApiError(Exception):
    """Base of every error the client raises."""


class APIStatusError(BatchApiError):
    """The server answered with an error status."""

    status_code: int = 0

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        error_type: str | None = None,
        server_message: str | None = None,
        body: Any = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_type = error_type
        self.server_message = server_message
        self.body = body
        self.attempts = attempts
        self.retry_after: float | None = None  # what the server asked, if it did


class BadRequestError(APIStatusError):
    """400: the call is malformed; fix it, do not retry."""


class AuthenticationError(APIStatusError):
    """401: no API key or a wrong one."""


class PermissionDeniedError(APIStatusError):
    """403: the key may not do this."""


class NotFoundError(APIStatusError):
    """404: no such batch (or endpoint)."""


class ConflictError(APIStatusError):
    """409: the call does not fit the batch's status, or repeats custom_ids or a key."""

    @property
    def custom_ids(self) -> list[str]:
        """The custom_ids the server says the batch already holds (may be empty)."""
        error = self.body.get("error") if isinstance(self.body, dict) else None
        ids = error.get("custom_ids") if isinstance(error, dict) else None
        return [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []


class PayloadTooLargeError(APIStatusError):
    """413: the call is over a limit of the server."""


class UnprocessableEntityError(APIStatusError):
    """422: parameters of the wrong value or type."""


class RateLimitError(APIStatusError):
    """429: too many requests; retried by the client until its budget is spent."""


class ServerError(APIStatusError):
    """5xx: the server failed; retried by the client until its budget is spent."""


class APIConnectionError(BatchApiError):
    """No answer from the server."""

    def __init__(self, message: str, *, maybe_sent: bool = True, attempts: int = 1) -> None:
        super().__init__(message)
        self.maybe_sent = maybe_sent
        self.attempts = attempts


class APITimeoutError(APIConnectionError):
    """No answer within the client's timeout."""


class BatchFailedError(BatchApiError):
    """The batch ended ``failed``; its answered requests still have results."""

    def __init__(self, batch: Batch) -> None:
        reason = f": {batch.error.message}" if batch.error else ""
        super().__init__(
            f"Batch {batch.id} ({batch.name}) failed{reason}. {batch.completed_count} of "
            f"{batch.request_count} requests were answered and keep their results."
        )
        self.batch = batch


class BatchCancelledError(BatchApiError):
    """The batch ended ``cancelled``; its answered requests still have results."""

    def __init__(self, batch: Batch) -> None:
        super().__init__(
            f"Batch {batch.id} ({batch.name}) was cancelled: {batch.completed_count} of "
            f"{batch.request_count} requests were answered, {batch.cancelled_count} stopped."
        )
        self.batch = batch


class WaitTimeoutError(BatchApiError):
    """The batch was still running when ``max_wait`` ran out; it goes on on the server."""

    def __init__(self, batch: Batch, waited_s: float) -> None:
        super().__init__(
            f"Batch {batch.id} ({batch.name}) is still {batch.status} after {waited_s:.0f} s "
            f"({batch.completed_count + batch.failed_count} of {batch.request_count} requests "
            "ended). It goes on on the server: wait again with "
            f"BatchClient.wait_for_batch({batch.id!r}), or run the same job again, which finds "
            "the batch by its name and resumes."
        )
        self.batch = batch
        self.waited_s = waited_s


def raise_for_status(batch: Batch) -> Batch:
    """The batch, if it completed; ``BatchFailedError`` or ``BatchCancelledError`` if not."""
    if batch.status == "failed":
        raise BatchFailedError(batch)
    if batch.status in ("cancelled", "cancelling"):
        raise BatchCancelledError(batch)
    return batch


_STATUS_ERRORS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def status_error(
    response: httpx.Response, *, attempts: int = 1, key_source: str | None = None
) -> APIStatusError:
    """The error for an error response: its class by status, its message from the server."""
    code = response.status_code
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    error_type = error.get("type") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(message, str):
        message = (
            error if isinstance(error, str) else response.text[:500]
        ) or response.reason_phrase
    cls = _STATUS_ERRORS.get(code, ServerError if code >= 500 else APIStatusError)
    request = response.request
    text = f"{request.method} {request.url.path} answered {code}"
    text += f" ({error_type}): {message}" if error_type else f": {message}"
    if cls is AuthenticationError:
        where = key_source or "the api_key given to BatchClient"
        text += f" Check the API key in {where}."
    if attempts > 1:
        text += f" (after {attempts} attempts)"
    return cls(
        text,
        status_code=code,
        error_type=error_type if isinstance(error_type, str) else None,
        server_message=message,
        body=body,
        attempts=attempts,
    )


def outcome_unknown(exc: BaseException) -> bool:
    """Whether a failed write may have taken effect anyway: a connection lost after the
    request went out, or a 5xx other than the ones that say nothing was done. Such a
    write is checked against the API before it is sent again, never resent blind."""
    from tablebatch.api.retry import NOT_PROCESSED_STATUS

    if isinstance(exc, APIConnectionError):
        return exc.maybe_sent
    if isinstance(exc, APIStatusError):
        return exc.status_code >= 500 and exc.status_code not in NOT_PROCESSED_STATUS
    return False
