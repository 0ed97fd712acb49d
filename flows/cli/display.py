"""What ``tablebatch run`` shows while a job runs: a progress display, and few log lines.

The job logs an ``AttemptProgress`` snapshot on the ``tablebatch.progress`` logger at
most every few seconds per attempt, and a last one with ``done=True``
(``tablebatch/jobs/progress.py``). ``ProgressDisplay`` is the logging handler that
turns them into

- on a terminal, one live line per attempt (``rich``: a bar, requests ended of all,
  sent / answered / failed, batches in flight, elapsed and the time left), redrawn in
  place;
- otherwise (CI, a worker's log, a pipe), plain lines, at most one every
  ``PLAIN_EVERY_S`` seconds per attempt, and the attempt's last.

``setup_output`` chooses what reaches the terminal: by default Prefect's own INFO lines
(``Finished in state Completed()``, the run's URL) and the job's INFO log lines are
kept off it — they still go to the Prefect API, so the run's page shows them —;
``verbose`` shows them all (and progress as plain lines); ``quiet`` shows errors alone
(and the summary the command prints).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any, Literal

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, Task, TextColumn
from rich.text import Text

from tablebatch.jobs.progress import AttemptProgress

Mode = Literal["quiet", "normal", "verbose"]
PROGRESS_LOGGER = "tablebatch.progress"
PLAIN_EVERY_S = 10.0  # plain progress lines, per attempt, at most this often
REFRESH_PER_S = 4  # redraws of the live display


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def time_left(snapshot: AttemptProgress, elapsed_s: float) -> float | None:
    """Seconds left at the rate so far (requests ended per second of the attempt); None
    until a request has ended."""
    if snapshot.done:
        return 0.0
    if snapshot.ended <= 0 or elapsed_s <= 0:
        return None
    return elapsed_s * (snapshot.rows - snapshot.ended) / snapshot.ended


def attempt_key(snapshot: AttemptProgress) -> tuple[str, str, str, int]:
    """One display line per job, stage, model and attempt."""
    return (snapshot.job, snapshot.stage, snapshot.model, snapshot.attempt)


def plain_line(snapshot: AttemptProgress, elapsed_s: float) -> str:
    """A snapshot as a line of text, with the elapsed and the estimated time left."""
    left = time_left(snapshot, elapsed_s)
    eta = "done" if snapshot.done else "left ?" if left is None else f"left ~{_clock(left)}"
    return (
        f"{snapshot.job}: {snapshot.stage} {snapshot.model}, attempt {snapshot.attempt}: "
        f"{snapshot.ended}/{snapshot.rows} ended; {snapshot.sent} sent, {snapshot.answered} "
        f"answered, {snapshot.failed} failed; {snapshot.in_flight} batch(es) in flight; "
        f"{_clock(elapsed_s)} elapsed, {eta}"
    )


class ProgressDisplay(logging.Handler):
    """A logging handler for ``tablebatch.progress`` that shows each attempt's progress:
    live on a terminal, plain throttled lines otherwise."""

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        live: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        plain_every_s: float = PLAIN_EVERY_S,
    ) -> None:
        super().__init__(logging.INFO)
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self._clock = clock
        self._plain_every_s = plain_every_s
        self._lock = threading.RLock()
        self._last_plain: dict[tuple[str, str, str, int], float] = {}
        self._progress: Progress | None = None  # while live
        self._tasks: dict[tuple[str, str, str, int], Any] = {}
        self._status: Any = None  # the task shown until the first snapshot

    # -- the live display ------------------------------------------------------------

    def start(self, status: str = "") -> None:
        """Start drawing (on a terminal), with ``status`` until the first snapshot."""
        if not self.live:
            return
        console = Console(file=self.stream, highlight=False)
        self._progress = Progress(
            SpinnerColumn(finished_text="[green]✓"),
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            TextColumn("{task.fields[counts]}"),
            _TimeColumn(self._clock),
            console=console,
            refresh_per_second=REFRESH_PER_S,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        if status:
            self._status = self._progress.add_task(status, total=None, counts="", snapshot=None)
        self._progress.start()

    def stop(self) -> None:
        """Draw the last state, leave the terminal as it was and stop listening: the run
        has ended (a later one in this process, a test's, has its own display and stream)."""
        logging.getLogger(PROGRESS_LOGGER).removeHandler(self)
        with self._lock:
            progress, self._progress = self._progress, None
        if progress is not None:
            if self._status is not None:
                progress.remove_task(self._status)
                self._status = None
            progress.stop()

    def print(self, text: str) -> None:
        """A line above the live display (or simply a line, when not live)."""
        with self._lock:
            if self._progress is not None:
                self._progress.console.print(text, markup=False, highlight=False)
                return
        self.stream.write(text + "\n")
        self.stream.flush()

    # -- logging ---------------------------------------------------------------------

    def emit(self, record: logging.LogRecord) -> None:
        """Show the record's ``progress`` snapshot (records without one are ignored)."""
        snapshot = getattr(record, "progress", None)
        if not isinstance(snapshot, AttemptProgress):
            return
        try:
            with self._lock:
                if self._progress is not None:
                    self._show_live(snapshot)
                else:
                    self._show_plain(snapshot)
        except Exception:
            self.handleError(record)

    def _show_plain(self, snapshot: AttemptProgress) -> None:
        key = attempt_key(snapshot)
        now = self._clock()
        last = self._last_plain.get(key)
        if not snapshot.done and last is not None and now - last < self._plain_every_s:
            return
        self._last_plain[key] = now
        self.stream.write(plain_line(snapshot, snapshot.elapsed_s) + "\n")
        self.stream.flush()

    def _show_live(self, snapshot: AttemptProgress) -> None:
        progress = self._progress
        assert progress is not None
        if self._status is not None:
            progress.remove_task(self._status)
            self._status = None
        key = attempt_key(snapshot)
        counts = (
            f"{snapshot.ended}/{snapshot.rows} · sent {snapshot.sent} · answered "
            f"{snapshot.answered} · failed {snapshot.failed} · {snapshot.in_flight} in flight"
        )
        fields = {"counts": counts, "snapshot": snapshot, "received": self._clock()}
        if key not in self._tasks:
            description = f"{snapshot.stage} {snapshot.model} · attempt {snapshot.attempt}"
            self._tasks[key] = progress.add_task(
                description, total=max(snapshot.rows, 1), completed=snapshot.ended, **fields
            )
        progress.update(self._tasks[key], completed=snapshot.ended, **fields)
        if snapshot.done:
            progress.update(self._tasks[key], total=max(snapshot.rows, 1))
            progress.stop_task(self._tasks[key])


class _TimeColumn(ProgressColumn):
    """Elapsed (from the attempt's own clock) and the estimated time left."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__()
        self._clock = clock

    def render(self, task: Task) -> Text:
        snapshot = task.fields.get("snapshot")
        if snapshot is None:
            return Text("")
        elapsed = snapshot.elapsed_s
        if not snapshot.done:
            elapsed += self._clock() - task.fields["received"]
        left = time_left(snapshot, snapshot.elapsed_s)
        if snapshot.done:
            eta = "done"
        elif left is None:
            eta = "left ?"
        else:
            eta = f"left ~{_clock(max(left - (elapsed - snapshot.elapsed_s), 0))}"
        return Text(f"{_clock(elapsed)} elapsed, {eta}", style="progress.elapsed")


class _Console(logging.Filter):
    """On the terminal's log handler: keeps Prefect's and the job's INFO lines off it
    (``normal``), or everything below ERROR (``quiet``); while the live display draws,
    the lines that pass are printed above it instead of through it."""

    def __init__(self, mode: Mode, display: ProgressDisplay | None, handler: logging.Handler):
        super().__init__()
        self.mode = mode
        self.display = display
        self.handler = handler

    def filter(self, record: logging.LogRecord) -> bool:
        if self.mode == "quiet" and record.levelno < logging.ERROR:
            return False
        if self.mode == "normal" and record.levelno < logging.WARNING:
            return False
        display = self.display
        if display is not None and display._progress is not None:
            display.print(self.handler.format(record))
            return False
        return True


def progress_display(mode: Mode, stream: IO[str] | None = None) -> ProgressDisplay | None:
    """The run's progress display on ``tablebatch.progress`` (None when quiet): live on a
    terminal, plain lines otherwise and with ``verbose`` (amid Prefect's own lines)."""
    logger = logging.getLogger(PROGRESS_LOGGER)
    for old in [h for h in logger.handlers if isinstance(h, ProgressDisplay)]:
        logger.removeHandler(old)
    logger.propagate = False  # the display is the only place progress is shown
    if mode == "quiet":
        return None
    display = ProgressDisplay(stream, live=False if mode == "verbose" else None)
    logger.addHandler(display)
    logger.setLevel(logging.INFO)
    return display


def filter_console(mode: Mode, display: ProgressDisplay | None) -> None:
    """Keep the terminal's log lines to what ``mode`` shows; call once Prefect has set up
    its logging (``import prefect`` does), as its console handler is the one filtered."""
    terminal = (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)
    for name in ("", "uvicorn", "fastapi"):
        for handler in logging.getLogger(name).handlers:
            if (
                isinstance(handler, logging.StreamHandler)
                and not isinstance(handler, ProgressDisplay)
                and getattr(handler, "stream", None) in terminal  # not a file or a capture
            ):
                for old in [f for f in handler.filters if isinstance(f, _Console)]:
                    handler.removeFilter(old)  # an earlier run's, in this process
                handler.addFilter(_Console(mode, display, handler))
