"""Errors of the local Batch API server, each carrying its HTTP status and type.

    ApiError                      (any status; body {"error": {"type", "message"}})
    ├── InvalidRequest            400 invalid_request_error
    ├── AuthenticationFailed      401 authentication_error
    ├── NotFound                  404 not_found_error
    ├── Conflict                  409 conflict_error
    ├── PayloadTooLarge           413 request_too_large
    └── Unprocessable             422 invalid_request_error

The HTTP layer turns any of them into a JSON error; the store raises them so
that a route stays a one-liner.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ApiError(Exception):
    """An error the API answers with: a status, a type and a message for the user."""

    status_code: ClassVar[int] = 400
    error_type: ClassVar[str] = "invalid_request_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        """The JSON body of the error response."""
        return {"error": {"type": self.error_type, "message": self.message, **self.details}}


class InvalidRequest(ApiError):
    """The call is malformed or names something that cannot be used."""


class AuthenticationFailed(ApiError):
    """No API key, or one the server does not accept."""

    status_code = 401
    error_type = "authentication_error"


class NotFound(ApiError):
    """The batch (or route) does not exist."""

    status_code = 404
    error_type = "not_found_error"


class Conflict(ApiError):
    """The call does not fit the current state (a status transition, a duplicate)."""

    status_code = 409
    error_type = "conflict_error"


class PayloadTooLarge(ApiError):
    """The call is over a limit of the server."""

    status_code = 413
    error_type = "request_too_large"


class Unprocessable(ApiError):
    """Parameters of the right JSON shape but the wrong values or types."""

    status_code = 422
