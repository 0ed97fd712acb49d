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
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import orjson

from tablebatch.server.backends import Backend
from tablebatch.server.settings import ServerSettings
from tablebatch.server.store import Outcome, Store, StoredBatch

log = logging.getLogger("tablebatch.server")

IDLE_WAIT_S = 1.0
IN_FLIGHT = 2  # chunks at the backend at once: one being answered, one queued
CANCEL_CHECK_S = 0.2  # while a chunk is answered, how often a cancel of its batch is looked for
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


@dataclass
class _Chunk:
    """Requests handed to the backend, whose outcomes are not recorded yet."""

    batch_seq: int
    batch_id: str
    rows: list[tuple[int, str, bytes]]
    early: dict[int, Outcome]
    future: Future[list[Outcome]] | None


class Worker:
    """Processes pending requests of processing batches through a backend.

    Up to ``IN_FLIGHT`` chunks are at the backend while the oldest is written,
    so that a backend that works outside this thread (helper processes, HTTP)
    never waits for SQLite, nor SQLite for it.
    """

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
        self._calls = ThreadPoolExecutor(1, thread_name_prefix="tablebatch-backend")
        self._in_flight: deque[_Chunk] = deque()
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
        self._calls.shutdown(wait=True, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                wait = self.run_once()
            except Exception:  # keep serving; the error is in the log
                log.exception("worker step failed")
                self._in_flight.clear()  # their requests stay pending and are taken again
                wait = IDLE_WAIT_S
            if wait:
                self._wake.wait(wait)
                self._wake.clear()
        try:
            self._drain()
        except Exception:  # the requests stay pending and are taken again on restart
            log.exception("could not record the last chunk")

    def run_once(self) -> float:
        """Do one step of work; return how long to wait before the next (0: go on)."""
        now = self._clock()
        if now - self._last_prune > PRUNE_EVERY_S:
            self.store.prune_idempotency(self.settings.idempotency_ttl_s)
            self._last_prune = now
        cancelling = self.store.cancelling_batches()
        for batch in cancelling:  # chunks in flight are recorded later, for rows still pending
            self.store.finish_cancel(batch.seq)
            log.info("batch %s cancelled", batch.id)
        if not self.settings.process:
            return IDLE_WAIT_S  # another server on this database answers its batches
        for batch_id in self.store.expire_due():  # the same for a dialect batch past its window
            log.info("batch %s expired", batch_id)
        faults = self.settings.faults
        wait = IDLE_WAIT_S
        for batch in self.store.processing_batches():
            ready_at = (batch.started_at or now) + faults.processing_delay_s
            if now < ready_at:
                wait = min(wait, ready_at - now)
                continue
            self._step(batch)
            return 0.0
        self._drain()
        return wait

    def _step(self, batch: StoredBatch) -> None:
        faults = self.settings.faults
        if self._in_flight and self._in_flight[0].batch_seq != batch.seq:
            self._drain()
        in_flight = sum(len(chunk.rows) for chunk in self._in_flight)
        ended = batch.request_count - batch.pending_count + in_flight
        limit = self.settings.worker_chunk
        concurrency = getattr(self.backend, "concurrency", None)
        if concurrency:  # a remote backend: small chunks, so that a cancel stops soon
            limit = min(limit, 4 * concurrency)
        if faults.batch_failure_rate and _unit(faults.seed, batch.name) < faults.batch_failure_rate:
            fail_at = math.ceil(faults.batch_fail_after * batch.request_count)
            if ended >= fail_at:
                if in_flight:
                    self._drain()
                    return
                self.store.finish(batch.seq, INJECTED_BATCH_ERROR)
                log.info("batch %s failed (injected)", batch.id)
                return
            limit = min(limit, fail_at - ended)
        if ended >= batch.request_count:
            if in_flight:
                self._drain()
                return
            self.store.finish(batch.seq)
            log.info("batch %s completed", batch.id)
            return
        if faults.processing_rate:
            limit = min(limit, max(1, int(faults.processing_rate / 10)))
        after_n = self._in_flight[-1].rows[-1][0] if self._in_flight else 0
        rows = self.store.take_pending(batch, limit, after_n)
        if rows:
            self._in_flight.append(self._submit(batch, rows))
        if len(self._in_flight) >= IN_FLIGHT or not rows:
            self._drain(1)
        if faults.processing_rate:
            self._stop.wait(len(rows) / faults.processing_rate)

    def _drain(self, count: int | None = None) -> None:
        """Record the outcomes of the oldest ``count`` chunks in flight (None: all)."""
        while self._in_flight and (count is None or count > 0):
            chunk = self._in_flight[0]
            self._await(chunk)
            self.store.record(chunk.batch_seq, self._collect(chunk))
            self._in_flight.popleft()
            count = None if count is None else count - 1

    def _await(self, chunk: _Chunk) -> None:
        """Wait for a chunk, and stop the chunks of its batch if it is cancelled meanwhile
        (a model backend may take seconds over a chunk; its answers would be dropped)."""
        future = chunk.future
        if future is None or not getattr(self.backend, "stops_in_flight", False):
            return
        while not future.done():
            done, _ = wait([future], timeout=CANCEL_CHECK_S)
            if done:
                return
            if any(b.seq == chunk.batch_seq for b in self.store.cancelling_batches()):
                self.store.finish_cancel(chunk.batch_seq)  # its pending rows: cancelled now
                for other in self._in_flight:
                    if other.batch_seq == chunk.batch_seq and other.future is not None:
                        other.future.cancel()
                log.info("batch %s cancelled; stopped its requests in flight", chunk.batch_id)
                return

    def _submit(self, batch: StoredBatch, rows: list[tuple[int, str, bytes]]) -> _Chunk:
        """Decide injected failures and unknown models now; send the rest to the backend."""
        faults = self.settings.faults
        models = self.settings.models
        early: dict[int, Outcome] = {}
        for n, custom_id, body in rows:
            if faults.request_failure_rate and (
                _unit(faults.seed, batch.name, custom_id) < faults.request_failure_rate
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
        future: Future[list[Outcome]] | None = None
        if rest:
            submit = getattr(self.backend, "submit", None)
            try:
                future = submit(rest) if submit else self._calls.submit(self.backend.complete, rest)
            except Exception as exc:  # _collect turns it into failed rows, not a retry loop
                future = Future()
                future.set_exception(exc)
        return _Chunk(batch.seq, batch.id, rows, early, future)

    def _collect(self, chunk: _Chunk) -> list[Outcome]:
        """The outcomes of a chunk, in its order; a backend crash fails its requests."""
        try:
            if chunk.future is not None and chunk.future.cancelled():
                cancelled = {"type": "cancelled", "message": "The batch was cancelled."}
                rest = [row for row in chunk.rows if row[0] not in chunk.early]
                answered = iter(Outcome(n, cid, error=cancelled) for n, cid, _ in rest)
            else:
                answered = iter(chunk.future.result() if chunk.future else [])
        except Exception as exc:
            log.exception("backend %s failed on a chunk of %s", self.backend.name, chunk.batch_id)
            error = {"type": "server_error", "message": f"The backend failed: {exc}"[:500]}
            rest = [row for row in chunk.rows if row[0] not in chunk.early]
            answered = iter(Outcome(n, cid, error=error) for n, cid, _ in rest)
        return [chunk.early.get(n) or next(answered) for n, _, _ in chunk.rows]
