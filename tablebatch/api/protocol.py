"""``BatchAPI``: what a job needs from a Batch API, whichever provider speaks it.

The job (``tablebatch.jobs.submit``, ``tasks.submit``, ``flows.job``) talks to
this interface only. ``BatchClient`` speaks it for the seed's API; each dialect
client (``tablebatch.api.dialects``) speaks it for a provider, translating that
provider's shapes to and from the seed's: the same ``Batch`` and statuses
(created, pending, processing, completed, failed, cancelling, cancelled), the
same request lines (``{"custom_id", "body": <chat completion request>}``) and
the same raw results (``{"custom_id", "status": completed|failed|cancelled,
"response": <chat completion>, "error": {"type", "message"}}``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from tablebatch.api.models import Batch, BatchStatus


@dataclass
class AddResult:
    """What ``add_requests`` did: requests added, requests the batch already held, calls."""

    added: int = 0
    already_present: int = 0
    calls: int = 0


@dataclass(frozen=True)
class Limits:
    """What one batch may hold at this API (None: no limit beyond the job's own)."""

    max_requests: int | None = None
    max_bytes: int | None = None  # of the seed-encoded request lines, with room for the dialect


@runtime_checkable
class BatchAPI(Protocol):
    """The calls a job makes on a Batch API (see the module docstring for the shapes)."""

    provider: str
    limits: Limits
    # Whether ``iter_batches(name_prefix=...)`` is filtered by the API itself, so that one
    # listing of a prefix costs what its batches cost (the seed's local server); else the
    # client walks every batch and matches the names (it learns False from a server that
    # turns out to ignore the filter).
    lists_by_prefix: bool

    @property
    def sleep(self) -> Callable[[float], None]:
        """How this client waits (between polls and retries)."""
        ...

    def iter_batches(
        self,
        *,
        status: BatchStatus | None = None,
        name: str | None = None,
        name_prefix: str | None = None,
        page_size: int = 100,
    ) -> Iterator[Batch]:
        """Every batch (of a status, of exactly this name, whose name starts with
        ``name_prefix``), newest first, in pages of ``page_size`` (or the largest the API
        takes: the client learns it)."""
        ...

    def find_batch(self, name: str) -> Batch | None:
        """The newest batch with exactly this name, or None."""
        ...

    def create_batch(
        self, name: str, *, model: str | None = None, description: str | None = None
    ) -> Batch:
        """A new, empty batch (``created``) named ``name``."""
        ...

    def get_batch(self, batch_id: str) -> Batch:
        """A batch and its counts."""
        ...

    def add_requests(self, batch_id: str, requests: Iterable[Any]) -> AddResult:
        """Add requests (``(custom_id, seed request line)`` pairs), each once: a request
        whose custom_id the batch already holds is not sent again."""
        ...

    def start(self, batch_id: str) -> Batch:
        """Close the batch for adding and let it run; returns the batch that runs."""
        ...

    def cancel(self, batch_id: str) -> Batch:
        """Stop a batch; answered requests keep their results."""
        ...

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
        """Poll until the batch ends; ``WaitTimeoutError`` after ``max_wait``."""
        ...

    def iter_result_pages(
        self, batch_id: str, *, page_size: int = 1000
    ) -> Iterator[list[dict[str, Any]]]:
        """Every result of a finished batch, in pages of raw seed-shaped results."""
        ...

    def close(self) -> None:
        """Close the connections."""
        ...

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: object) -> None: ...
