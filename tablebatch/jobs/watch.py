"""Waiting for the batches of an attempt with one listing a round for all of them.

A hundred shards in flight cost one call a round, not a hundred: the attempt's
batches share a name prefix, and an API whose list filters by it
(``BatchAPI.lists_by_prefix``: the seed's and the local server's) answers for all
of them at once. Other APIs, and a seed server that turns out to ignore the filter
(it lists other batches too), are polled batch by batch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from tablebatch.api import Batch, BatchAPI, WaitTimeoutError
from tablebatch.jobs.schema import JobConfig


def wait_for(
    client: BatchAPI,
    batch: Batch,
    config: JobConfig,
    on_progress: Callable[[Batch], None] | None = None,
) -> Batch:
    """Poll a batch until it ends (``wait_for_batch`` with the job's settings)."""
    if batch.is_terminal:
        if on_progress is not None:
            on_progress(batch)
        return batch
    return client.wait_for_batch(
        batch.id,
        poll_interval=config.batch.poll_interval_s,
        max_poll_interval=config.batch.max_poll_interval_s,
        max_wait=config.batch.max_wait_s,
        on_progress=on_progress,
    )


class BatchWatcher:
    """Waits for the batches of an attempt with one listing a poll for all of them (the
    attempt's name prefix), instead of a poll per batch, where the API filters its list by
    the prefix (``lists_by_prefix``); else each batch is polled on its own, as
    ``wait_for_batch`` does."""

    PAGE = 1000

    def __init__(
        self,
        client: BatchAPI,
        prefix: str,
        config: JobConfig,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.config = config
        self._clock = clock
        self._sleep = sleep or client.sleep  # as its client waits
        self._cond = threading.Condition()
        self._latest: dict[str, Batch] = {}
        self._waiting: dict[str, int] = {}  # batch id -> waiters
        self._round = 0
        self._error: BaseException | None = None
        self._shared = client.lists_by_prefix
        self._polling = False
        self.polls = 0

    def wait(self, batch: Batch, on_progress: Callable[[Batch], None] | None = None) -> Batch:
        """The batch once it has ended; ``WaitTimeoutError`` after ``batch.max_wait_s``."""
        if batch.is_terminal or not self._shared:
            return wait_for(self.client, batch, self.config, on_progress)
        started = self._clock()
        max_wait = self.config.batch.max_wait_s
        deadline = None if max_wait is None else started + max_wait
        with self._cond:
            self._waiting[batch.id] = self._waiting.get(batch.id, 0) + 1
            self._latest.setdefault(batch.id, batch)
            if not self._polling:
                self._polling = True
                threading.Thread(target=self._poll, name="batch-watcher", daemon=True).start()
        try:
            seen, last = -1, None
            while True:
                with self._cond:
                    while self._round == seen and self._error is None and self._shared:
                        left = None if deadline is None else deadline - self._clock()
                        if left is not None and left <= 0:
                            break
                        self._cond.wait(left)
                    if self._error is not None:
                        raise self._error
                    seen, current, shared = self._round, self._latest[batch.id], self._shared
                if not shared:
                    return wait_for(self.client, current, self.config, on_progress)
                state = (current.status, current.completed_count, current.failed_count)
                if on_progress is not None and state != last:
                    on_progress(current)
                last = state
                if current.is_terminal:
                    return current
                if deadline is not None and self._clock() >= deadline:
                    raise WaitTimeoutError(current, self._clock() - started)
        finally:
            with self._cond:
                self._waiting[batch.id] -= 1
                if not self._waiting[batch.id]:
                    del self._waiting[batch.id]

    def _listing(self) -> list[Batch]:
        """Every batch of the prefix, with one listing."""
        return list(self.client.iter_batches(name_prefix=self.prefix, page_size=self.PAGE))

    def _poll(self) -> None:
        shortest = interval = self.config.batch.poll_interval_s
        longest = self.config.batch.max_poll_interval_s
        pace = _Pace()
        while True:
            with self._cond:
                if not self._waiting or self._error is not None or not self._shared:
                    self._polling = False
                    return
            error: BaseException | None = None
            try:
                self.polls += 1
                listed = self._listing()
            except BaseException as exc:
                error = exc
            if error is not None:  # every waiter raises it; no one polls on
                with self._cond:
                    self._error, self._polling = error, False
                    self._cond.notify_all()
                return
            found = {b.id: b for b in listed}
            now = self._clock()
            with self._cond:
                if not self.client.lists_by_prefix or any(i not in found for i in self._waiting):
                    self._shared = False  # the server does not filter: poll one by one
                for batch_id in self._waiting:
                    if batch_id in found:
                        self._latest[batch_id] = found[batch_id]
                waited = list(self._waiting)
                self._round += 1
                self._cond.notify_all()
            soonest = pace.soonest_end(listed, waited, now)
            try:  # the backoff's interval, or sooner when a batch should end sooner
                self._sleep(interval if soonest is None else min(interval, max(soonest, shortest)))
            except BaseException as exc:  # the run is stopping (JobAborted): every waiter ends
                with self._cond:
                    self._error, self._polling = exc, False
                    self._cond.notify_all()
                return
            interval = min(interval * 1.5, longest)


class _Pace:
    """How fast an attempt's batches end requests together, from one listing to the next
    (a local server ends a 10,000-request batch in about a second, often between two polls:
    the sum shows the server's pace where one batch's counts may not)."""

    def __init__(self) -> None:
        self._then: float | None = None
        self._pending: dict[str, int] = {}

    def soonest_end(self, listed: list[Batch], waited: Iterable[str], now: float) -> float | None:
        """Seconds until the first waited-for batch should end, at the pace the listed
        batches kept together since the last listing (None: nothing moved, or the first)."""
        before, then = self._pending, self._then
        self._pending, self._then = {b.id: b.pending_count for b in listed}, now
        # a batch still being filled grows: only what ended counts
        moved = sum(max(0, before[b.id] - b.pending_count) for b in listed if b.id in before)
        if then is None or moved <= 0 or now <= then:
            return None
        ids = set(waited)
        left = [b.pending_count for b in listed if b.id in ids and not b.is_terminal]
        return min(left) * (now - then) / moved if left else None
