"""How far an attempt has got, as events any display can follow.

Every poll of every batch of an attempt updates one ``Progress``; at most every
``every_s`` seconds (and when the attempt's last request ends) it hands a
snapshot, an ``AttemptProgress``, to its ``report`` callback (the flow's Prefect
progress artifact) and logs it on the ``tablebatch.progress`` logger with the
snapshot as the record's ``progress`` attribute. A terminal display (the CLI's
progress bar, or plain lines when the output is not a terminal) is a logging
handler on that logger: the job code does not know who is watching.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from tablebatch.api import Batch

LOGGER = logging.getLogger("tablebatch.progress")


@dataclass(frozen=True)
class AttemptProgress:
    """A snapshot of one attempt of one stage: its requests and its batches so far."""

    job: str
    stage: str  # "answer", or "judge"
    model: str
    attempt: int
    rows: int  # requests the attempt is to send
    sent: int = 0  # requests in the batches seen so far (sent now, or found on the API)
    answered: int = 0
    failed: int = 0
    cancelled: int = 0
    batches: int = 0  # batches of the attempt seen so far
    in_flight: int = 0  # of those, the ones that have not ended
    elapsed_s: float = 0.0
    done: bool = False  # the attempt has ended

    @property
    def ended(self) -> int:
        """Requests that ended: answered, failed or cancelled."""
        return min(self.answered + self.failed + self.cancelled, self.rows)

    def line(self) -> str:
        """The snapshot as one line of plain text."""
        return (
            f"{self.job}: {self.stage} {self.model}, attempt {self.attempt}: "
            f"{self.ended} of {self.rows} request(s) ended ({self.answered} answered, "
            f"{self.failed} failed), {self.in_flight} batch(es) in flight"
        )


class Progress:
    """Requests ended across the batches of an attempt, for one progress display: every poll
    of every shard updates it, and ``report(ended, total)`` runs at most every ``every_s``
    seconds (and when all have ended), so that a hundred shards do not flood the Prefect
    API. Each report is also logged as an ``AttemptProgress`` (see the module docstring)."""

    def __init__(
        self,
        total: int,
        report: Callable[[int, int], None] | None = None,
        every_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        job: str = "",
        stage: str = "answer",
        model: str = "",
        attempt: int = 1,
    ) -> None:
        self.total = total
        self._report = report
        self._every_s = every_s
        self._clock = clock
        self._started = clock()
        self._batches: dict[str, Batch] = {}
        self._last: float | None = None
        self._lock = threading.Lock()
        self._snapshot = AttemptProgress(job, stage, model, attempt, total)

    def update(self, batch: Batch) -> None:
        """Record the batch's counts; report if it is time."""
        with self._lock:
            self._batches[batch.id] = batch
            snapshot = self._take()
            now = self._clock()
            due = (
                self._last is None
                or now - self._last >= self._every_s
                or snapshot.ended >= self.total
            )
            if due:
                self._last = now
        if due:
            self._emit(snapshot)

    def finish(self) -> AttemptProgress:
        """Report the attempt as ended, whatever the time; returns the last snapshot."""
        with self._lock:
            snapshot = replace(self._take(), done=True, in_flight=0)
        self._emit(snapshot, report=False)
        return snapshot

    def _take(self) -> AttemptProgress:
        batches = self._batches.values()
        return replace(
            self._snapshot,
            sent=min(sum(b.request_count for b in batches), self.total),
            answered=sum(b.completed_count for b in batches),
            failed=sum(b.failed_count for b in batches),
            cancelled=sum(b.cancelled_count for b in batches),
            batches=len(self._batches),
            in_flight=sum(1 for b in batches if not b.is_terminal),
            elapsed_s=self._clock() - self._started,
        )

    def _emit(self, snapshot: AttemptProgress, *, report: bool = True) -> None:
        if report and self._report is not None:
            self._report(snapshot.ended, self.total)
        LOGGER.info("%s", snapshot.line(), extra={"progress": snapshot})
