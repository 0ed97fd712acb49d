"""The OpenAI Batch API dialect (the contract: the ``openai`` SDK's ``batches`` and ``files``).

A batch is one JSONL file (``POST /files``, purpose ``batch``; lines
``{custom_id, method, url, body}``) and one ``POST /batches {input_file_id,
endpoint, completion_window: "24h", metadata}``. Results are JSONL files:
``output_file_id`` (answers) and ``error_file_id`` (errors).

- **Statuses**: validating, in_progress and finalizing are ``processing``;
  completed, failed and cancelling/cancelled map to themselves; ``expired`` is
  ``failed`` (its answered requests still have results, which are read); any
  other stops with an error naming it.
- **Never twice**: the job's batch name is stored in the batch's ``metadata``
  (``tablebatch_name``, matched; ``name`` and ``description`` too, for people); a
  re-run lists the batches and matches it.
- **Limits**: 50,000 requests and 200 MB per batch (file).
- A batch whose every request failed still says ``completed``; a request's
  error may be in ``error`` or in ``response.body.error`` — both are read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from tablebatch.api.dialects.common import (
    IdCodec,
    cancelled,
    completed,
    error_text,
    failed,
    map_status,
    parse_time,
)
from tablebatch.api.dialects.onecall import Draft, OneCallApi
from tablebatch.api.errors import BadRequestError, BatchApiError, ConflictError
from tablebatch.api.http import new_idempotency_key
from tablebatch.api.models import CHAT_COMPLETIONS, Batch, BatchStatus, ErrorInfo, Usage
from tablebatch.api.pages import Page
from tablebatch.api.protocol import Limits
from tablebatch.crash import crash_point

STATUSES: dict[str, BatchStatus] = {
    "validating": "processing",
    "in_progress": "processing",
    "finalizing": "processing",
    "completed": "completed",
    "failed": "failed",
    "expired": "failed",
    "cancelling": "cancelling",
    "cancelled": "cancelled",
}
NAME_KEY = "tablebatch_name"
MAX_REQUESTS = 50_000
MAX_BYTES = 200_000_000
LINE_OVERHEAD = 64  # bytes a line adds to the seed's: "method", "url"
LIST_PAGE = 100  # the most GET /batches returns at once


class OpenAIBatches(OneCallApi):
    """The job's Batch API over OpenAI's Batch API (``base_url`` e.g. ``https://api.openai.com/v1``)."""

    provider = "openai"
    max_batch_requests = MAX_REQUESTS
    max_batch_bytes = MAX_BYTES
    limits = Limits(MAX_REQUESTS, MAX_BYTES - MAX_REQUESTS * LINE_OVERHEAD)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ids = IdCodec("openai")  # OpenAI takes any string as a custom_id

    # -- translation ---------------------------------------------------------------

    def _translate(self, draft: Draft, custom_id: str, body: dict[str, Any]) -> bytes:
        line = {
            "custom_id": self.ids.encode(custom_id),
            "method": "POST",
            "url": CHAT_COMPLETIONS,
            "body": body,
        }
        return orjson.dumps(line)

    def _batch(self, raw: Any) -> Batch:
        """An OpenAI batch object as the seed's ``Batch``."""
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
            raise BatchApiError(f"openai answered {str(raw)[:200]!r}, which is not a batch.")
        batch_id = raw["id"]
        status = map_status("openai", batch_id, raw.get("status"), STATUSES)
        counts = raw.get("request_counts") or {}
        total = int(counts.get("total") or 0)
        done = int(counts.get("completed") or 0)
        errored = int(counts.get("failed") or 0)
        stopped = 0
        rest = max(total - done - errored, 0)
        if status == "cancelled":
            stopped = rest
        elif status in ("failed", "completed"):
            errored += rest  # ended without an answer
        metadata = raw.get("metadata") or {}
        error = None
        if raw.get("status") == "expired":
            error = ErrorInfo(
                type="expired",
                message="the batch expired (OpenAI's 24 h window) before all its requests ran; "
                "answered requests keep their results",
            )
        elif status == "failed":
            data = (raw.get("errors") or {}).get("data") or []
            kind, message = error_text(data[0]) if data else ("failed", "no reason given")
            error = ErrorInfo(type=kind, message=message)
        usage = raw.get("usage") or None
        return Batch(
            id=batch_id,
            name=str(metadata.get(NAME_KEY) or ""),
            description=metadata.get("description"),
            model=raw.get("model"),
            endpoint=raw.get("endpoint"),
            status=status,
            created_at=parse_time(raw.get("created_at")),
            started_at=parse_time(raw.get("in_progress_at")),
            completed_at=parse_time(raw.get("completed_at")),
            failed_at=parse_time(raw.get("failed_at") or raw.get("expired_at")),
            cancelled_at=parse_time(raw.get("cancelled_at")),
            request_count=total,
            completed_count=done,
            failed_count=errored,
            cancelled_count=stopped,
            usage=Usage(
                prompt_tokens=usage.get("input_tokens") or 0,
                completion_tokens=usage.get("output_tokens") or 0,
                total_tokens=usage.get("total_tokens") or 0,
            )
            if isinstance(usage, dict)
            else None,
            error=error,
            output_file_id=raw.get("output_file_id"),
            error_file_id=raw.get("error_file_id"),
        )

    # -- batches -------------------------------------------------------------------

    def _send(self, draft: Draft) -> Batch:
        """Upload the draft as a JSONL file and create its batch, named in its metadata."""
        content = b"\n".join(draft.lines.values()) + b"\n"
        upload = self._request(
            "POST",
            "/files",
            data={"purpose": "batch"},
            files={"file": (f"{draft.name}.jsonl", content, "application/jsonl")},
            idempotency_key=new_idempotency_key(),
        )  # a repeated upload leaves an unused file, never a paid batch
        file_id = self._json(upload).get("id")
        if not isinstance(file_id, str):
            raise BatchApiError("POST /files: the answer has no file id.")
        metadata = {NAME_KEY: draft.name, "name": draft.name}  # "name": for people to read
        if draft.description:
            metadata["description"] = draft.description[:512]
        payload = orjson.dumps(
            {
                "input_file_id": file_id,
                "endpoint": CHAT_COMPLETIONS,
                "completion_window": "24h",
                "metadata": metadata,
            }
        )

        def create() -> Batch:
            response = self._request(
                "POST",
                "/batches",
                content=payload,
                idempotency_key=new_idempotency_key(),
                repeat_if_maybe_sent=False,
            )
            return self._batch(self._json(response))

        batch = self._create_reconciled(draft.name, create)
        crash_point("created-unrecorded")
        return batch

    def _iter_sent(self, page_size: int) -> Iterator[Batch]:
        def fetch(after: str | None, limit: int | None) -> Page[Any]:
            params = {"limit": min(limit or LIST_PAGE, LIST_PAGE), "after": after}
            page = self._json(self._request("GET", "/batches", params=params))
            data = page.get("data") if isinstance(page, dict) else None
            if not isinstance(data, list):
                raise BatchApiError("GET /batches: the answer is not a list of batches.")
            return Page.by_last_id(data, bool(page.get("has_more")), what="GET /batches")

        for page in self._pages(fetch, page_size, "GET /batches"):
            yield from (self._batch(raw) for raw in page.items)

    def _find_sent(self, name: str | None = None, prefix: str | None = None) -> list[Batch]:
        """The batches named ``name`` (or whose name starts with ``prefix``) in their
        metadata, newest first: a walk of every page, as OpenAI cannot filter by metadata."""
        found = [
            b
            for b in self._iter_sent(LIST_PAGE)
            if b.name
            and (name is None or b.name == name)
            and (prefix is None or b.name.startswith(prefix))
        ]
        return sorted(found, key=lambda b: b.created_at.timestamp() if b.created_at else 0.0)[::-1]

    def _get_sent(self, batch_id: str) -> Batch:
        return self._batch(self._json(self._request("GET", f"/batches/{batch_id}")))

    def _cancel_sent(self, batch_id: str) -> Batch:
        try:
            response = self._request(
                "POST", f"/batches/{batch_id}/cancel", idempotency_key=new_idempotency_key()
            )
        except (ConflictError, BadRequestError):
            batch = self._get_sent(batch_id)
            if batch.status in ("cancelling", "cancelled"):
                return batch
            raise
        return self._batch(self._json(response))

    # -- results -------------------------------------------------------------------

    def _result(self, line: str, batch_id: str) -> dict[str, Any]:
        """One line of an output or error file as a seed result."""
        try:
            raw = orjson.loads(line)
            wire = raw["custom_id"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise BatchApiError(
                f"openai batch {batch_id}: a result line is not a result: {line[:200]!r}"
            ) from None
        custom_id = self.ids.decode(wire)
        response = raw.get("response") if isinstance(raw.get("response"), dict) else {}
        body = response.get("body")
        error = raw.get("error")
        ok = not error and response.get("status_code") == 200
        if ok and isinstance(body, dict) and "error" not in body:
            return completed(custom_id, body, raw.get("id"))
        if error:
            kind, message = error_text(error)
        elif isinstance(body, dict) and body.get("error"):
            kind, message = error_text(body["error"])
        else:
            kind, message = "error", f"the request answered {response.get('status_code')}"
        if kind == "batch_cancelled":
            return cancelled(custom_id, batch_id, raw.get("id"))
        if kind == "batch_expired":
            return failed(custom_id, "expired", message, raw.get("id"))
        return failed(custom_id, kind, message, raw.get("id"))

    def iter_result_pages(
        self, batch_id: str, *, page_size: int = 1000
    ) -> Iterator[list[dict[str, Any]]]:
        """Every result of the batch (its output file, then its error file), in pages."""
        raw = self._json(self._request("GET", f"/batches/{batch_id}"))
        page: list[dict[str, Any]] = []
        for key in ("output_file_id", "error_file_id"):
            file_id = raw.get(key) if isinstance(raw, dict) else None
            if not file_id:
                continue
            for line in self._iter_lines(f"/files/{file_id}/content"):
                page.append(self._result(line, batch_id))
                if len(page) >= page_size:
                    yield page
                    page = []
        if page:
            yield page
