"""The Anthropic Message Batches dialect (the contract: the ``anthropic`` SDK's
``messages.batches``, API version ``2026-10-21``).

``POST /messages/batches {requests: [{custom_id, params}]}`` creates a batch
with all its requests; ``processing_status`` is in_progress, canceling or
ended; results are JSONL at the batch's ``results_url``, each
``{custom_id, result: {type: succeeded|errored|canceled|expired, ...}}``.

- **Statuses**: in_progress is ``processing``, canceling ``cancelling``; ended
  is ``cancelled`` after a cancel, ``failed`` when requests expired (the others
  keep their results), else ``completed``; any other status stops with an error
  naming it.
- **Requests** and **answers**: a chat body becomes Messages params and an
  Anthropic Message comes back as a chat completion (``anthropic_messages.py``);
  ``max_tokens`` defaults to the dialect's; ``temperature``, ``top_p`` and
  ``top_k`` are dropped with a warning, once per parameter.
- **custom_ids** must match ``^[A-Za-z0-9_-]{1,64}$``: each is sent as
  ``<tag>-<id>`` where the tag is 8 hex digits of the batch's name (so results
  can be checked to belong to the batch) and an id outside the pattern is
  base64url-encoded (``IdCodec``); both are undone on the way back.
- **Never twice**: batches have no name or metadata, so a local ``Ledger``
  records name → id (an intent before the create, the id after). See
  ``ledger.py`` and the README for what that means on another machine.
- **Limits**: 100,000 requests and 256 MB per batch.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import orjson

from tablebatch.api.dialects.anthropic_messages import (
    DROPPED_PARAMS,
    chat_completion,
    messages_params,
)

# re-exported: tablebatch.jobs.params reads the parameter sets here
from tablebatch.api.dialects.anthropic_messages import MAPPED_PARAMS as MAPPED_PARAMS
from tablebatch.api.dialects.anthropic_messages import NATIVE_PARAMS as NATIVE_PARAMS
from tablebatch.api.dialects.common import (
    IdCodec,
    cancelled,
    completed,
    error_text,
    failed,
    map_status,
    parse_time,
)
from tablebatch.api.dialects.ledger import Intent, Ledger
from tablebatch.api.dialects.onecall import Draft, OneCallApi
from tablebatch.api.errors import BadRequestError, BatchApiError, ConflictError, NotFoundError
from tablebatch.api.http import new_idempotency_key
from tablebatch.api.models import Batch, BatchStatus, ErrorInfo
from tablebatch.api.pages import Page
from tablebatch.api.protocol import Limits
from tablebatch.crash import crash_point

log = logging.getLogger("tablebatch.api")

API_VERSION = "2026-10-21"  # anthropic SDK 2.14: ANTHROPIC_API_VERSION
STATUSES: dict[str, BatchStatus] = {
    "in_progress": "processing",
    "canceling": "cancelling",
    "ended": "completed",
}
MAX_REQUESTS = 100_000
MAX_BYTES = 256_000_000
LINE_OVERHEAD = 64  # bytes a request may add to the seed's: the tag, max_tokens
DEFAULT_MAX_TOKENS = 1024
LIST_PAGE = 1000
INTENT_SKEW_S = 600.0  # how far the provider's clock may be behind ours
ID_PATTERN = r"[A-Za-z0-9_-]{1,64}"
TAG_LENGTH = 8


def name_tag(name: str) -> str:
    """The tag of a batch's name that prefixes its custom_ids."""
    return hashlib.blake2b(name.encode(), digest_size=TAG_LENGTH // 2).hexdigest()


class AnthropicBatches(OneCallApi):
    """The job's Batch API over Anthropic's Message Batches (``base_url`` e.g.
    ``https://api.anthropic.com/v1``); ``ledger`` records which batch is which name."""

    provider = "anthropic"
    max_batch_requests = MAX_REQUESTS
    max_batch_bytes = MAX_BYTES
    limits = Limits(MAX_REQUESTS, MAX_BYTES - MAX_REQUESTS * LINE_OVERHEAD)

    def __init__(
        self,
        *args: Any,
        ledger: Ledger | str | None = None,
        max_tokens: int | None = None,
        **kwargs: Any,
    ) -> None:
        """``ledger``: a ``Ledger`` or its file (None keeps it in memory: no resume across
        processes); ``max_tokens``: for requests whose body gives none."""
        super().__init__(*args, **kwargs)
        self.ledger = ledger if isinstance(ledger, Ledger) else Ledger(ledger)
        self.max_tokens = max_tokens or DEFAULT_MAX_TOKENS
        self.ids = IdCodec("anthropic", ID_PATTERN, 64 - TAG_LENGTH - 1)
        self._warned: set[str] = set()

    def _auth_headers(self, api_key: str) -> dict[str, str]:
        return {"x-api-key": api_key}

    def _extra_headers(self) -> dict[str, str]:
        return {"anthropic-version": API_VERSION}

    # -- translation ---------------------------------------------------------------

    def _translate(self, draft: Draft, custom_id: str, body: dict[str, Any]) -> bytes:
        dropped = sorted(DROPPED_PARAMS & set(body) - self._warned)
        if dropped:
            self._warned.update(dropped)
            log.warning(
                "anthropic: %s %s not a parameter of the Messages API (version %s); dropped",
                ", ".join(dropped),
                "is" if len(dropped) == 1 else "are",
                API_VERSION,
            )
        try:
            params = messages_params(body, self.max_tokens)
        except ValueError as exc:
            raise ValueError(f"request {custom_id!r}: {exc}") from None
        wire = f"{name_tag(draft.name)}-{self.ids.encode(custom_id)}"
        return orjson.dumps({"custom_id": wire, "params": params})

    def _custom_id(self, wire: str, tag: str | None) -> str | None:
        """The custom_id a result was sent for; None when it belongs to another batch name."""
        head, sep, rest = wire.partition("-")
        if not sep or len(head) != TAG_LENGTH:
            raise BatchApiError(
                f"anthropic returned the custom_id {wire!r}, not one tablebatch sent."
            )
        if tag is not None and head != tag:
            return None
        return self.ids.decode(rest)

    def _batch(self, raw: Any, name: str | None = None) -> Batch:
        """An Anthropic message batch as the seed's ``Batch`` (its name from the ledger)."""
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
            raise BatchApiError(f"anthropic answered {str(raw)[:200]!r}, which is not a batch.")
        batch_id = raw["id"]
        status = map_status("anthropic", batch_id, raw.get("processing_status"), STATUSES)
        counts = raw.get("request_counts") or {}
        number = {k: int(counts.get(k) or 0) for k in ("processing", "succeeded", "errored")}
        number |= {k: int(counts.get(k) or 0) for k in ("canceled", "expired")}
        error = None
        if status == "completed" and raw.get("cancel_initiated_at"):
            status = "cancelled"
        elif status == "completed" and number["expired"]:
            status = "failed"
            error = ErrorInfo(
                type="expired",
                message=f"{number['expired']} request(s) expired (Anthropic's 24 h window) "
                "before they ran; answered requests keep their results",
            )
        if name is None:
            name = self.ledger.names().get(batch_id, "")
        return Batch(
            id=batch_id,
            name=name,
            status=status,
            created_at=parse_time(raw.get("created_at")),
            completed_at=parse_time(raw.get("ended_at")) if status == "completed" else None,
            failed_at=parse_time(raw.get("ended_at")) if status == "failed" else None,
            cancelled_at=parse_time(raw.get("ended_at")) if status == "cancelled" else None,
            request_count=sum(number.values()),
            completed_count=number["succeeded"],
            failed_count=number["errored"] + number["expired"],
            cancelled_count=number["canceled"],
            error=error,
            results_url=raw.get("results_url"),
        )

    # -- batches -------------------------------------------------------------------

    def _send(self, draft: Draft) -> Batch:
        """Create the batch with all the draft's requests; the ledger notes the intent
        before and the id after."""
        at = self._wall_clock()
        self.ledger.intend(draft.name, len(draft.lines), at)
        payload = b'{"requests":[' + b",".join(draft.lines.values()) + b"]}"

        def create() -> Batch:
            response = self._request(
                "POST",
                "/messages/batches",
                content=payload,
                idempotency_key=new_idempotency_key(),
                repeat_if_maybe_sent=False,
            )
            return self._batch(self._json(response), draft.name)

        batch = self._create_reconciled(draft.name, create)
        crash_point("created-unrecorded")
        self.ledger.record(draft.name, batch.id, self._wall_clock())
        return batch

    def _list(self, page_size: int) -> Iterator[dict[str, Any]]:
        """Every message batch as Anthropic gives it, newest first."""

        def fetch(after: str | None, limit: int | None) -> Page[Any]:
            params = {"limit": min(limit or LIST_PAGE, LIST_PAGE), "after_id": after}
            page = self._json(self._request("GET", "/messages/batches", params=params))
            data = page.get("data") if isinstance(page, dict) else None
            if not isinstance(data, list):
                raise BatchApiError("GET /messages/batches: the answer is not a list of batches.")
            more = bool(page.get("has_more"))
            return Page.by_last_id(data, more, page.get("last_id"), "GET /messages/batches")

        for page in self._pages(fetch, page_size, "GET /messages/batches"):
            yield from page.items

    def _iter_sent(self, page_size: int) -> Iterator[Batch]:
        names = self.ledger.names()
        for raw in self._list(page_size):
            yield self._batch(raw, names.get(raw.get("id"), ""))

    def _find_sent(self, name: str | None = None, prefix: str | None = None) -> list[Batch]:
        """The batches the ledger records for ``name`` (or for the names that start with
        ``prefix``), and any it intended but did not record, if they can be told apart;
        newest first."""
        if name is not None:
            names = [name] if prefix is None or name.startswith(prefix) else []
        else:
            names = [n for n in self.ledger.all_names() if n.startswith(prefix or "")]
        found = []
        for each in names:
            for batch_id in self.ledger.ids(each):
                try:
                    found.append(self._get_sent(batch_id, each))
                except NotFoundError:
                    continue  # deleted at Anthropic: nothing to resume
            intents = self.ledger.open_intents(each)
            if intents:
                adopted = self._resolve(intents[0])
                if adopted is not None:
                    self.ledger.record(each, adopted.id, self._wall_clock())
                    found.append(adopted)
        return sorted(found, key=lambda b: b.created_at.timestamp() if b.created_at else 0.0)[::-1]

    def _resolve(self, intent: Intent) -> Batch | None:
        """The batch an unanswered intent created, if any: among the batches created since
        it with its request count and no name in the ledger, the one whose results (once
        ended) carry its name's tag. Several that cannot be told apart are an error."""
        claimed = set(self.ledger.names())
        tag = name_tag(intent.name)
        candidates = []
        for raw in self._list(LIST_PAGE):
            created = parse_time(raw.get("created_at"))
            if created is not None and created.timestamp() < intent.at - INTENT_SKEW_S:
                break  # newest first: everything further is older than the intent
            batch = self._batch(raw, intent.name)
            if batch.id in claimed or batch.request_count != intent.count:
                continue
            if batch.is_terminal and not self._carries_tag(batch, tag):
                continue
            candidates.append(batch)
        if len(candidates) > 1:
            ids = ", ".join(b.id for b in candidates)
            raise BatchApiError(
                f"anthropic: batch {intent.name} may have been created by a run that stopped "
                f"before recording it, and batches {ids} all fit (same request count, created "
                "since). tablebatch cannot tell which is its own until they end: run the job "
                "again once they have ended, or cancel the ones that are not."
            )
        return candidates[0] if candidates else None

    def _carries_tag(self, batch: Batch, tag: str) -> bool:
        """Whether the first result of an ended batch carries ``tag``."""
        url = getattr(batch, "results_url", None)
        if not url:
            return False
        for line in self._iter_lines(self._results_path(url, batch.id)):
            wire = orjson.loads(line).get("custom_id", "")
            return isinstance(wire, str) and wire.startswith(f"{tag}-")
        return False

    def _get_sent(self, batch_id: str, name: str | None = None) -> Batch:
        raw = self._json(self._request("GET", f"/messages/batches/{batch_id}"))
        return self._batch(raw, name)

    def _cancel_sent(self, batch_id: str) -> Batch:
        try:
            response = self._request(
                "POST",
                f"/messages/batches/{batch_id}/cancel",
                idempotency_key=new_idempotency_key(),
            )
        except (ConflictError, BadRequestError):
            batch = self._get_sent(batch_id)
            if batch.status in ("cancelling", "cancelled"):
                return batch
            raise
        return self._batch(self._json(response))

    # -- results -------------------------------------------------------------------

    def _results_path(self, url: str, batch_id: str) -> str:
        """``results_url`` as a path of this API; another host would be sent the key, so it
        is refused."""
        parts, base = urlsplit(url), urlsplit(self.base_url)
        if parts.netloc and (parts.scheme, parts.netloc) != (base.scheme, base.netloc):
            raise BatchApiError(
                f"anthropic batch {batch_id}: its results_url is on {parts.netloc}, not on "
                f"{base.netloc}; tablebatch does not send the API key to another host."
            )
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        base_path = base.path.rstrip("/")
        return path[len(base_path) :] if base_path and path.startswith(base_path) else path

    def _result(self, line: str, batch_id: str, tag: str | None) -> dict[str, Any] | None:
        try:
            raw = orjson.loads(line)
            wire, result = raw["custom_id"], raw["result"]
            kind = result["type"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise BatchApiError(
                f"anthropic batch {batch_id}: a result line is not a result: {line[:200]!r}"
            ) from None
        custom_id = self._custom_id(wire, tag)
        if custom_id is None:
            log.warning(
                "anthropic batch %s: result %s is not this batch's; skipped", batch_id, wire
            )
            return None
        if kind == "succeeded":
            return completed(custom_id, chat_completion(result.get("message") or {}))
        if kind == "errored":
            return failed(custom_id, *error_text(result.get("error")))
        if kind == "canceled":
            return cancelled(custom_id, batch_id)
        if kind == "expired":
            return failed(
                custom_id, "expired", "the request expired (Anthropic's 24 h window) before it ran"
            )
        raise BatchApiError(
            f"anthropic batch {batch_id}: result type {kind!r} of {wire} is not one tablebatch "
            "knows (succeeded, errored, canceled, expired); it stops rather than guess."
        )

    def iter_result_pages(
        self, batch_id: str, *, page_size: int = 1000
    ) -> Iterator[list[dict[str, Any]]]:
        """Every result of the ended batch (streamed from its ``results_url``), in pages."""
        batch = self._get_sent(batch_id)
        url = getattr(batch, "results_url", None)
        if not url:
            return
        tag = name_tag(batch.name) if batch.name else None
        page: list[dict[str, Any]] = []
        for line in self._iter_lines(self._results_path(url, batch_id)):
            result = self._result(line, batch_id, tag)
            if result is not None:
                page.append(result)
            if len(page) >= page_size:
                yield page
                page = []
        if page:
            yield page
