"""``OneCallApi``: the job's create → add → start over providers that take a batch in one call.

OpenAI and Anthropic create a batch with all its requests at once. Here
``create_batch`` makes a *draft* that lives in this client only, ``add_requests``
fills it (translating each request to the provider's shape, so a bad one fails
before anything is sent), and ``start`` sends it: the provider sees one batch or
none. A crash before ``start`` costs nothing; a re-run finds a started batch by
its name (each dialect says how) and never sends it again.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tablebatch.api.dialects.common import unique
from tablebatch.api.errors import (
    APIConnectionError,
    APIStatusError,
    BatchApiError,
    ConflictError,
    NotFoundError,
    outcome_unknown,
)
from tablebatch.api.http import HttpApi
from tablebatch.api.models import Batch, BatchStatus
from tablebatch.api.protocol import AddResult
from tablebatch.crash import crash_point

DRAFT_PREFIX = "draft_"


@dataclass
class Draft:
    """A batch not sent yet: its name and its requests in the provider's shape."""

    id: str
    name: str
    model: str | None
    description: str | None
    created_at: datetime
    lines: dict[str, bytes] = field(default_factory=dict)  # custom_id -> provider request
    size: int = 0

    def batch(self, status: BatchStatus | None = None) -> Batch:
        """The draft as the job sees a batch: ``created``, then ``pending`` once it has requests."""
        return Batch(
            id=self.id,
            name=self.name,
            model=self.model,
            description=self.description,
            status=status or ("pending" if self.lines else "created"),
            created_at=self.created_at,
            request_count=len(self.lines),
        )


class OneCallApi(HttpApi):
    """Base of the dialects that create a batch in one call (see the module docstring).

    A subclass supplies ``_translate`` (a seed request to one provider request,
    as bytes), ``_send`` (create the batch from a draft), ``_find_sent`` (the
    started batches of a name, newest first), ``_get_sent``, ``_cancel_sent`` and
    ``_iter_sent`` (every started batch, newest first)."""

    max_batch_requests: int = 0  # the provider's own limits, checked before a batch is sent
    max_batch_bytes: int = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._drafts: dict[str, Draft] = {}
        self._lock = threading.Lock()

    # -- what a dialect supplies -------------------------------------------------

    def _translate(self, draft: Draft, custom_id: str, body: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def _send(self, draft: Draft) -> Batch:
        raise NotImplementedError

    def _find_sent(self, name: str | None = None, prefix: str | None = None) -> list[Batch]:
        raise NotImplementedError

    def _get_sent(self, batch_id: str) -> Batch:
        raise NotImplementedError

    def _cancel_sent(self, batch_id: str) -> Batch:
        raise NotImplementedError

    def _iter_sent(self, page_size: int) -> Iterator[Batch]:
        raise NotImplementedError

    # -- the job's interface -------------------------------------------------------

    def _draft(self, batch_id: str) -> Draft | None:
        if not batch_id.startswith(DRAFT_PREFIX):
            return None
        with self._lock:
            draft = self._drafts.get(batch_id)
        if draft is None:
            raise NotFoundError(
                f"batch {batch_id} is a draft of another client or process; drafts are never "
                "sent to the provider, so there is nothing to find.",
                status_code=404,
            )
        return draft

    def create_batch(
        self, name: str, *, model: str | None = None, description: str | None = None
    ) -> Batch:
        """A draft batch: nothing is sent to the provider until ``start``."""
        draft = Draft(
            id=f"{DRAFT_PREFIX}{uuid.uuid4().hex}",
            name=name,
            model=model,
            description=description,
            created_at=datetime.fromtimestamp(self._wall_clock(), UTC),
        )
        with self._lock:
            self._drafts[draft.id] = draft
        return draft.batch()

    def get_batch(self, batch_id: str) -> Batch:
        """A batch and its counts (a draft as ``created``/``pending``)."""
        draft = self._draft(batch_id)
        return draft.batch() if draft is not None else self._get_sent(batch_id)

    def iter_batches(
        self,
        *,
        status: BatchStatus | None = None,
        name: str | None = None,
        name_prefix: str | None = None,
        page_size: int = 100,
    ) -> Iterator[Batch]:
        """Every batch (of a status, of a name, whose name starts with ``name_prefix``),
        newest first; this client's drafts last."""
        if name is None and name_prefix is None:
            sent: Iterable[Batch] = self._iter_sent(page_size)
        else:
            sent = self._find_sent(name, name_prefix)
        for batch in sent:
            if status is None or batch.status == status:
                yield batch
        with self._lock:
            drafts = [
                d
                for d in self._drafts.values()
                if (name is None or d.name == name)
                and (name_prefix is None or d.name.startswith(name_prefix))
            ]
        for draft in sorted(drafts, key=lambda d: d.created_at, reverse=True):
            batch = draft.batch()
            if status is None or batch.status == status:
                yield batch

    def find_batch(self, name: str) -> Batch | None:
        """The newest batch with exactly this name (sent, else a draft), or None."""
        return next(self.iter_batches(name=name), None)

    def add_requests(self, batch_id: str, requests: Iterable[Any]) -> AddResult:
        """Put requests in the draft, translated; a custom_id it holds already is skipped."""
        draft = self._draft(batch_id)
        if draft is None:
            raise ConflictError(
                f"batch {batch_id} was sent to {self.provider} already; {self.provider} "
                "batches take all their requests when they are created.",
                status_code=409,
            )
        translated = [(c, self._translate(draft, c, body)) for c, body in unique(requests)]
        result = AddResult()
        with self._lock:
            for custom_id, line in translated:
                if custom_id in draft.lines:
                    result.already_present += 1
                    continue
                draft.lines[custom_id] = line
                draft.size += len(line) + 1
                result.added += 1
        crash_point("mid-add")
        return result

    def start(self, batch_id: str) -> Batch:
        """Send the draft as one batch, unless a batch of its name was sent meanwhile (then
        that one, and the draft is dropped); a sent batch is returned as it is."""
        draft = self._draft(batch_id)
        if draft is None:
            return self._get_sent(batch_id)
        if not draft.lines:
            raise ConflictError(
                f"batch {batch_id} ({draft.name}) has no requests; add some before starting it.",
                status_code=409,
            )
        self._check_size(draft)
        existing = self._find_sent(draft.name)
        if existing:
            batch = existing[-1]  # the oldest: what every run of the job settles on
        else:
            batch = self._send(draft)
            older = self._find_sent(draft.name)
            if older and older[-1].id != batch.id:  # another run sent it at the same moment
                self._cancel_sent(batch.id)
                batch = older[-1]
        with self._lock:
            self._drafts.pop(draft.id, None)
        return batch

    def _check_size(self, draft: Draft) -> None:
        """Refuse a draft over the provider's limits, before anything is sent."""
        count, size = len(draft.lines), draft.size
        if count > self.max_batch_requests or size > self.max_batch_bytes:
            raise BatchApiError(
                f"batch {draft.name} has {count} requests and {size} bytes; {self.provider} "
                f"takes at most {self.max_batch_requests} requests and {self.max_batch_bytes} "
                "bytes per batch. Lower batch.max_requests or batch.max_bytes."
            )

    def _create_reconciled(self, name: str, create: Callable[[], Batch]) -> Batch:
        """Run ``create`` (a POST sent with ``repeat_if_maybe_sent=False``); when it failed in
        a way that may have taken effect, look for the batch by name before trying again, so
        that a lost answer never creates a second, paid batch."""
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                return create()
            except (APIConnectionError, APIStatusError) as exc:
                if not outcome_unknown(exc):
                    raise
                self._wait_before_retry(
                    "POST", name, exc, attempt, started, getattr(exc, "retry_after", None)
                )
                found = self._find_sent(name)
                if found:
                    return found[-1]

    def cancel(self, batch_id: str) -> Batch:
        """Cancel a batch; a draft is dropped (it was never sent)."""
        draft = self._draft(batch_id)
        if draft is None:
            return self._cancel_sent(batch_id)
        with self._lock:
            self._drafts.pop(draft.id, None)
        return draft.batch("cancelled")
