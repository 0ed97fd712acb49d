"""The Batch API: its objects (``models``), errors, retry policy, the ``BatchAPI`` interface a job
uses, ``BatchClient`` (the seed's API) and the provider dialects (``tablebatch.api.dialects``)."""

from tablebatch.api.adding import chunk_requests, encode_request
from tablebatch.api.client import BatchClient
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
from tablebatch.api.http import HttpApi
from tablebatch.api.models import Batch, BatchRequest, BatchResult, NewRequest
from tablebatch.api.protocol import AddResult, BatchAPI, Limits
from tablebatch.api.retry import RetryPolicy

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AddResult",
    "AuthenticationError",
    "BadRequestError",
    "Batch",
    "BatchAPI",
    "BatchApiError",
    "BatchCancelledError",
    "BatchClient",
    "BatchFailedError",
    "BatchRequest",
    "BatchResult",
    "ConflictError",
    "HttpApi",
    "Limits",
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
