"""The Batch API: its objects (``models``), errors, retry policy, and ``BatchClient``."""

from tablebatch.api.client import AddResult, BatchClient, chunk_requests, encode_request
from tablebatch.api.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BatchApiError,
    BatchCancelledError,
    BatchFailedError,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    UnprocessableEntityError,
    WaitTimeoutError,
    raise_for_status,
)
from tablebatch.api.models import Batch, BatchRequest, BatchResult, NewRequest
from tablebatch.api.retry import RetryPolicy

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AddResult",
    "AuthenticationError",
    "BadRequestError",
    "Batch",
    "BatchApiError",
    "BatchCancelledError",
    "BatchClient",
    "BatchFailedError",
    "BatchRequest",
    "BatchResult",
    "ConflictError",
    "NewRequest",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "RetryPolicy",
    "ServerError",
    "UnprocessableEntityError",
    "WaitTimeoutError",
    "chunk_requests",
    "encode_request",
    "raise_for_status",
]
