"""The objects of the Batch API (``seeds/batch-api.md``), as pydantic models.

One definition serves both sides: the local server documents its OpenAPI schema
with them, and the client parses responses into them. Response models accept
extra fields, so a server that adds one does not break the client.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

BatchStatus = Literal[
    "created", "pending", "processing", "completed", "failed", "cancelling", "cancelled"
]
RequestStatus = Literal["pending", "completed", "failed", "cancelled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
CHAT_COMPLETIONS = "/v1/chat/completions"


class ApiObject(BaseModel):
    """Base of response objects: extra fields are kept, not rejected."""

    model_config = ConfigDict(extra="allow")


class Usage(ApiObject):
    """Token counts."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ErrorInfo(ApiObject):
    """What went wrong: a machine-readable ``type`` and a message for a person."""

    type: str
    message: str


class ErrorResponse(BaseModel):
    """The body of every error answer."""

    error: ErrorInfo


class Batch(ApiObject):
    """A batch and its progress."""

    id: str
    object: Literal["batch"] = "batch"
    name: str
    description: str | None = None
    model: str | None = None
    endpoint: str | None = Field(None, description="The endpoint every request targets.")
    status: BatchStatus
    created_at: datetime | None = None
    started_at: datetime | None = Field(None, description="When processing started.")
    completed_at: datetime | None = Field(None, description="When it completed.")
    failed_at: datetime | None = Field(None, description="When it failed.")
    cancelled_at: datetime | None = Field(None, description="When it was cancelled.")
    request_count: int = 0
    completed_count: int = 0
    failed_count: int = 0
    cancelled_count: int = Field(0, description="Requests stopped by a cancel.")
    usage: Usage | None = Field(None, description="Tokens used by the batch so far.")
    error: ErrorInfo | None = Field(None, description="Why the batch failed, if it did.")

    @property
    def is_terminal(self) -> bool:
        """True once the batch can change no more (completed, failed or cancelled)."""
        return self.status in TERMINAL_STATUSES

    @property
    def pending_count(self) -> int:
        """Requests that have not ended yet."""
        return self.request_count - self.completed_count - self.failed_count - self.cancelled_count


class BatchList(ApiObject):
    """A page of batches, newest first."""

    object: Literal["list"] = "list"
    data: list[Batch]
    has_more: bool


class BatchRequest(ApiObject):
    """A request of a batch, as listed."""

    id: str
    custom_id: str
    status: RequestStatus


class BatchRequestList(ApiObject):
    """A page of a batch's requests, in the order they were added."""

    object: Literal["list"] = "list"
    data: list[BatchRequest]
    has_more: bool


class ChatMessage(ApiObject):
    """A message of a conversation."""

    role: str
    content: str | None = None


class Choice(ApiObject):
    """One answer of a chat completion."""

    index: int = 0
    message: ChatMessage
    finish_reason: str | None = None


class ChatCompletion(ApiObject):
    """The response of a chat-completions request."""

    id: str
    object: str = "chat.completion"
    created: int | None = None
    model: str | None = None
    choices: list[Choice]
    usage: Usage | None = None


class BatchResult(ApiObject):
    """The result of a finished request: a ``response``, or an ``error``."""

    id: str
    custom_id: str
    status: Literal["completed", "failed"]
    response: ChatCompletion | None = None
    error: ErrorInfo | None = None


class BatchResultList(ApiObject):
    """A page of a batch's results, in the order they were written."""

    object: Literal["list"] = "list"
    data: list[BatchResult]
    has_more: bool


# -- request bodies -------------------------------------------------------------


class CreateBatchBody(BaseModel):
    """Body of ``POST /v1/batches``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=256)
    description: str | None = Field(None, max_length=4096)
    model: str | None = Field(None, min_length=1, max_length=256)
    endpoint: Literal["/v1/chat/completions"] = CHAT_COMPLETIONS


class RequestMessage(BaseModel):
    """A chat message in a request body."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class RequestBody(BaseModel):
    """A chat-completions request body; other OpenAI parameters pass through."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[RequestMessage] = Field(min_length=1)


class NewRequest(BaseModel):
    """One request to add: a ``custom_id`` unique in the batch, and a body."""

    custom_id: str = Field(min_length=1, max_length=512)
    body: RequestBody


class AddRequestsBody(BaseModel):
    """Body of ``POST /v1/batches/{batch_id}/requests``."""

    model_config = ConfigDict(extra="forbid")

    requests: list[NewRequest] = Field(min_length=1)
