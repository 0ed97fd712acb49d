"""The worker: moves ``processing`` batches to their end, one chunk at a time.

A single thread, so that batches are served first-started first and every count
is written by one writer. Each chunk is answered by the backend and written in
one transaction: after a crash the chunk that was in flight is simply taken
again, and no request gets two results. The injected faults that concern
processing (a delay after start, a rate cap, failing requests, failing batches)
are applied here, decided by a seeded hash so that a run can be repeated.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable

import orjson

from tablebatch.server.backends import Backend
from tablebatch.server.settings import ServerSettings
from tablebatch.server.store import Batch, Outcome, Store

log = logging.getLogger("tablebatch.server")

IDLE_WAIT_S = 1.0
PRUNE_EVERY_S = 600.0

INJECTED_REQUEST_ERROR = {
    "type": "server_error",
    "message": "The model failed on this request (injected fault); it may succeed if retried.",
}
INJECTED_BATCH_ERROR = {
    "type": "batch_failed",
    "message": "The batch failed on the server (injected fault); requests that had not ended "
    "were failed. Answered requests keep their results.",
}


def _unit(*parts: object) -> float:
    """A number in [0, 1) that depends only on ``parts``."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class Worker:
    """Processes pending requests of processing batches through a backend."""

    def __init__(
        self,
        store: Store,
        backend: Backend,
        settings: ServerSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.backend = backend
        self.settings = settings
        self._clock = clock
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_prune = 0.0

    def start(self) -> None:
        """Run the worker in a daemon thread."""
        self._thread = threading.Thread(target=self._loop, name="tablebatch-worker", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Look for work now (a batch was started or cancelled)."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the chunk in hand."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                wait = self.run_once()
            except Exception:  # keep serving; the error is in the log
                log.exception("worker step failed")
                wait = IDLE_WAIT_S
            if wait:
                self._wake.wait(wait)
                self._wake.clear()

    def run_once(self) -> float:
        """Do one step of work; return how long to wait before the next (0: go on)."""
        now = self._clock()
        if now - self._last_prune > PRUNE_EVERY_S:
            self.store.prune_idempotency(self.settings.idempotency_ttl_s)
            self._last_prune = now
        for batch in self.store.cancelling_batches():
            self.store.finish_cancel(batch.seq)
            log.info("batch %s cancelled", batch.id)
        faults = self.settings.faults
        wait = IDLE_WAIT_S
        for batch in self.store.processing_batches():
            ready_at = (batch.started_at or now) + faults.processing_delay_s
            if now < ready_at:
                wait = min(wait, ready_at - now)
                continue
            self._step(batch)
            return 0.0
        return wait

    def _step(self, batch: Batch) -> None:
        faults = self.settings.faults
        ended = batch.request_count - batch.pending_count
        limit = self.settings.worker_chunk
        failing = faults.batch_failure_rate and _unit(faults.seed, batch.id) < (
            faults.batch_failure_rate
        )
        if failing:
            fail_at = math.ceil(faults.batch_fail_after * batch.request_count)
            if ended >= fail_at:
                self.store.finish(batch.seq, INJECTED_BATCH_ERROR)
                log.info("batch %s failed (injected)", batch.id)
                return
            limit = min(limit, fail_at - ended)
        if batch.pending_count == 0:
            self.store.finish(batch.seq)
            log.info("batch %s completed", batch.id)
            return
        if faults.processing_rate:
            limit = min(limit, max(1, int(faults.processing_rate / 10)))
        rows = self.store.take_pending(batch, limit)
        self.store.record(batch.seq, self._complete(batch, rows))
        if faults.processing_rate:
            self._stop.wait(len(rows) / faults.processing_rate)

    def _complete(self, batch: Batch, rows: list[tuple[int, str, bytes]]) -> list[Outcome]:
        """Outcomes for ``rows``: injected failures and unknown models first, then the backend."""
        faults = self.settings.faults
        models = self.settings.models
        early: dict[int, Outcome] = {}
        for n, custom_id, body in rows:
            if faults.request_failure_rate and (
                _unit(faults.seed, batch.id, custom_id) < faults.request_failure_rate
            ):
                early[n] = Outcome(n, custom_id, error=INJECTED_REQUEST_ERROR)
            elif models is not None:
                model = orjson.loads(body).get("model")
                if model not in models:
                    early[n] = Outcome(
                        n,
                        custom_id,
                        error={
                            "type": "model_not_found",
                            "message": f"The model {model!r} is not served here; "
                            f"available: {', '.join(models)}.",
                        },
                    )
        rest = [row for row in rows if row[0] not in early]
        try:
            answered = iter(self.backend.complete(rest) if rest else [])
        except Exception as exc:
            log.exception("backend %s failed on a chunk of batch %s", self.backend.name, batch.id)
            error = {"type": "server_error", "message": f"The backend failed: {exc}"[:500]}
            answered = iter(Outcome(n, cid, error=error) for n, cid, _ in rest)
        return [early[n] if n in early else next(answered) for n, _, _ in rows]
