"""What becomes of a run's batches in flight when the run stops early.

A run that is stopped — Ctrl-C, a stop signal (how a Prefect runner or worker
cancels a flow run), a cancel seen in Prefect, a crash — cancels the batches it
has in flight (``batch.on_abort: cancel``, the default) or leaves them running
(``keep``); a run that gives up waiting (``batch.max_wait_s``) follows
``batch.on_timeout``. The run's batches are found on the API by their names, as
``tablebatch cancel`` finds a job's.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from types import FrameType
from typing import Any

from tablebatch.api import Batch, BatchAPI
from tablebatch.api.errors import WaitTimeoutError
from tablebatch.jobs.errors import JobAborted
from tablebatch.jobs.manage import CancelOutcome, open_batches, request_cancel, wait_ended
from tablebatch.jobs.naming import stage_prefix
from tablebatch.jobs.schema import JobConfig

log = logging.getLogger("tablebatch.jobs")


_current: ContextVar[RunGuard | None] = ContextVar("tablebatch_run_guard", default=None)


def stopping() -> bool:
    """True when the run in this context is stopping (told to, or ending on an error): it
    starts no further attempt, shard or batch. Prefect runs a flow's tasks in a copy of
    its context, so its tasks see this too."""
    guard = _current.get()
    return guard is not None and guard.stopping


def run_prefixes(config: JobConfig) -> list[str]:
    """The name prefixes of every batch a run of ``config`` may create (its job, stages
    and prompt fingerprints): how the run tells its batches from others."""
    models = config.model_names
    prefixes = [stage_prefix(config.name, "answer", config.fingerprint(m)) for m in models]
    second = config.kind_impl.second_stage()
    if second is not None:
        prefixes += [stage_prefix(config.name, second.stage, second.fingerprint(m)) for m in models]
    return prefixes


class RunGuard:
    """What becomes of a run's batches in flight when the run stops early.

    Enter it around the part of a run that talks to the API, and give the run's
    client its ``sleep``. Then, on an abort — the first Ctrl-C or stop signal
    (SIGTERM, which is how a Prefect runner or worker cancels a flow run),
    ``abort()`` (a cancel seen in Prefect), or an exception (a crash):

    - ``on_abort: cancel`` cancels every open batch of the run (and keeps doing
      so for any the run creates after), and wakes the waits: they see their
      batches end, so the run collects the answered rows and writes them, the
      others marked ``cancelled``. No further attempt starts (``stopping()``).
    - ``on_abort: keep`` leaves them running, and the waits stop at once
      (``JobAborted``): a later run of the job collects them.

    A second signal stops the run at once, as if there were no guard. A wait that
    gives up (``WaitTimeoutError``) follows ``on_timeout`` instead. Signal handlers
    are installed only in the main thread (where Prefect runs a flow).
    """

    def __init__(
        self,
        config: JobConfig,
        *,
        sweep_s: float = 0.5,
        poll_s: float = 1.0,
        cancel_wait_s: float = 60.0,
    ) -> None:
        self.config = config
        self.on_abort = config.batch.on_abort
        self.on_timeout = config.batch.on_timeout
        self.prefixes = run_prefixes(config)
        self.sweep_s = sweep_s
        self.poll_s = poll_s
        self.cancel_wait_s = cancel_wait_s
        self.reason = ""
        self.signal: int | None = None
        self.cancelled: dict[str, Batch] = {}  # every batch this guard asked to cancel
        self.timeout_outcome: CancelOutcome | None = None  # what on_timeout: cancel did
        self.cancel_error: str | None = None  # why it could not
        self._client: BatchAPI | None = None
        self._aborted = threading.Event()
        self._halted = threading.Event()  # waits stop: batches kept, or the run is ending
        self._wake = threading.Event()  # set by either: sleeping waits wake up
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._sweeper: threading.Thread | None = None
        self._signals = 0
        self._previous: dict[int, Any] = {}
        self._token: Any = None
        self._local = threading.local()

    @property
    def aborted(self) -> bool:
        """True once the run was told to stop."""
        return self._aborted.is_set()

    @property
    def stopping(self) -> bool:
        """True once the run was told to stop, or is ending on an error or a timeout."""
        return self._aborted.is_set() or self._halted.is_set()

    # -- the run's client waits through this ----------------------------------------------

    def sleep(self, seconds: float) -> None:
        """The client's sleep: wakes at once on an abort; after one, polls at most every
        ``poll_s`` while cancelled batches end, or raises ``JobAborted`` when they are kept."""
        if getattr(self._local, "cancelling", False):  # the guard's own calls: plain retries
            time.sleep(seconds)
            return
        if not self._wake.is_set():
            self._wake.wait(seconds)
        elif not self._halted.is_set():
            self._halted.wait(min(seconds, self.poll_s))
        if self._halted.is_set():  # the run is ending: this wait ends too
            raise JobAborted(f"{self.config.name}: {self.reason or 'the run ends'}; wait stopped")

    # -- stopping ------------------------------------------------------------------------------

    def abort(self, reason: str, signum: int | None = None) -> None:
        """Stop the run (thread-safe; the first reason is kept)."""
        with self._lock:
            if self._aborted.is_set():
                return
            self.reason = reason
            self.signal = signum
            log.warning("%s: %s", self.config.name, reason)
            if self.on_abort == "keep":
                self._halt()
            else:
                self._sweeper = threading.Thread(
                    target=self._sweep, name="tablebatch-cancel", daemon=True
                )
                self._sweeper.start()
            self._aborted.set()
            self._wake.set()

    def _halt(self) -> None:
        """Stop every wait of the run now."""
        self._halted.set()
        self._wake.set()

    def _sweep(self) -> None:
        """Cancel the run's open batches now, and any that appear until the run ends."""
        while True:
            try:
                self.cancel_open()
            except Exception as exc:  # the API may be down; try again, the run goes on
                log.warning("%s: could not cancel the run's batches: %s", self.config.name, exc)
            if self._done.wait(self.sweep_s):
                return

    def cancel_open(self) -> list[Batch]:
        """Cancel the run's batches that have not ended; returns them."""
        if self._client is None:
            return []
        self._local.cancelling = True
        try:
            found = [b for p in self.prefixes for b in open_batches(self._client, p)]
            mine = [b for b in found if b.status != "cancelling" or b.id not in self.cancelled]
            asked = request_cancel(self._client, mine)
        finally:
            self._local.cancelling = False
        for batch in asked:
            if batch.id not in self.cancelled:
                log.warning("%s: cancelled batch %s (%s)", self.config.name, batch.id, batch.name)
            self.cancelled[batch.id] = batch
        return asked

    def message(self) -> str:
        """What happened to the run's batches, for the user."""
        if self.on_abort == "keep":
            return (
                f"{self.config.name}: {self.reason}; its batches go on on the API "
                "(batch.on_abort: keep). To collect them, run the job again; to stop them: "
                f"tablebatch cancel {self.config.name}"
            )
        return (
            f"{self.config.name}: {self.reason}; {len(self.cancelled)} batch(es) in flight were "
            "cancelled (batch.on_abort: cancel). Answered rows are kept: a later run of the "
            "job sends only the rest."
        )

    # -- the guarded block ------------------------------------------------------------------------

    @contextmanager
    def protect(self, client: BatchAPI) -> Iterator[RunGuard]:
        """Guard the block in which the run sends and waits through ``client``."""
        self._client = client
        self._token = _current.set(self)
        self._install()
        try:
            yield self
        except WaitTimeoutError:
            self.reason = self.reason or "it gave up waiting (batch.max_wait_s)"
            self._halt()  # the other waits end now too
            if self.on_timeout == "cancel":
                try:
                    self.timeout_outcome = self._cancel_and_wait()
                except Exception as error:  # the timeout stays the error; say what else failed
                    self.cancel_error = str(error)
            raise
        except JobAborted:
            raise
        except BaseException as exc:
            self._halt()
            if self.on_abort == "cancel":
                if not self.reason:
                    self.reason = f"the run crashed ({type(exc).__name__})"
                try:
                    self._sweep_briefly()
                except Exception as error:  # keep the crash's own error, say what else failed
                    log.error("%s: could not cancel the run's batches: %s", self.config.name, error)
            raise
        finally:
            self._done.set()
            if self._sweeper is not None:
                self._sweeper.join(30)
            self._restore()
            _current.reset(self._token)

    def _sweep_briefly(self, rounds: int = 3) -> list[Batch]:
        """Cancel the run's open batches now and for a moment after: a shard that was
        creating its batch as the run stopped shows it within that moment (later shards
        create none, ``stopping()``)."""
        asked: dict[str, Batch] = {}
        for n in range(rounds):
            if n:
                time.sleep(self.sweep_s)
            asked |= {b.id: b for b in self.cancel_open()}
        return list(asked.values())

    def _cancel_and_wait(self) -> CancelOutcome:
        asked = self._sweep_briefly()
        assert self._client is not None
        self._local.cancelling = True
        try:
            ended = wait_ended(self._client, asked, timeout_s=self.cancel_wait_s, poll_s=0.2)
        finally:
            self._local.cancelling = False
        return CancelOutcome(ended)

    # -- signals ----------------------------------------------------------------------------------

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            with suppress(ValueError, OSError):  # not allowed here: the run goes on unguarded
                self._previous[signum] = signal.signal(signum, self._on_signal)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            with suppress(ValueError, OSError, TypeError):
                signal.signal(signum, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1:
            what = {
                "SIGINT": "Ctrl-C (SIGINT)",
                "SIGTERM": "a stop signal (SIGTERM: how a Prefect worker or runner cancels a "
                "flow run)",
            }.get(name, name)
            self.abort(f"stopped by {what}", signum)
            if self.on_abort == "cancel":
                return  # the run ends on its own, once its batches are cancelled
            raise JobAborted(self.message(), signal=signum)
        self._halt()  # a second signal: stop now, as without the guard
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)
        elif signum == signal.SIGINT or previous == signal.SIG_DFL:
            raise KeyboardInterrupt
