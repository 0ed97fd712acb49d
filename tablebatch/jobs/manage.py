"""A job's batches on the API: find them, show how far they got, cancel them.

A job names its batches ``<job>--<stage>-<fingerprint>--a<attempt>--s<shard>``
(``tablebatch.jobs.naming``), so the API alone knows what a job has running: no
local file is read. The API's batch list (the seed's ``GET
/v1/batches``, newest first, filtered by ``status`` at most; or a provider
dialect's, through the same ``BatchAPI``) is paged to the end and the names are
parsed, so this works against any server of the seed's shape. What the commands
print of them is ``tablebatch.jobs.status_view``.

What a run does with its own batches when it is stopped is ``tablebatch.jobs.guard``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.compute as pc
import yaml

from tablebatch.api import (
    BadRequestError,
    Batch,
    BatchAPI,
    ConflictError,
)
from tablebatch.api.models import BatchStatus
from tablebatch.io import read_table, resolve
from tablebatch.jobs.config import JobConfig, load_config, project_root
from tablebatch.jobs.errors import ConfigError
from tablebatch.jobs.naming import JOB_NAME, job_of, job_prefix
from tablebatch.jobs.rows import default_output

OPEN = ("created", "pending", "processing", "cancelling")  # not ended: may still cost
RUNNING = ("created", "pending", "processing")  # may still answer requests


def is_open(batch: Batch) -> bool:
    """True while a batch has not ended: it may still answer (so cost), or it is being
    cancelled. A ``pending`` or ``processing`` batch counts by what it has left to end,
    not by its status alone: a provider without a status string (xAI) reads ``pending``
    to any client but the run that started the batch, also once every request ended."""
    if batch.is_terminal or batch.status not in OPEN:
        return False
    return batch.status in ("created", "cancelling") or batch.pending_count > 0


def iter_all_batches(
    client: BatchAPI, status: BatchStatus | None = None, name_prefix: str | None = None
) -> Iterator[Batch]:
    """Every batch on the API (of a status, whose name starts with ``name_prefix``), newest
    first, in pages as large as it allows (the client learns how large)."""
    return client.iter_batches(status=status, name_prefix=name_prefix, page_size=1000)


def job_batches(client: BatchAPI, job: str) -> list[Batch]:
    """Every batch of ``job``, newest first."""
    return [b for b in iter_all_batches(client, name_prefix=job_prefix(job)) if _job_of(b) == job]


def open_batches(client: BatchAPI, prefix: str, job: str | None = None) -> list[Batch]:
    """The batches whose name starts with ``prefix`` (of ``job``, when given) that have not
    ended (``OPEN``), newest first.

    Walks the list once per open status, so the cost is that of the open batches,
    not of the account's history."""
    found = [
        b
        for status in OPEN
        for b in iter_all_batches(client, status, prefix)
        if is_open(b) and (job is None or _job_of(b) == job)
    ]
    return sorted(found, key=lambda b: b.created_at or datetime.min.replace(tzinfo=UTC))[::-1]


def job_open_batches(client: BatchAPI, job: str) -> list[Batch]:
    """The batches of ``job`` that have not ended, newest first."""
    return open_batches(client, job_prefix(job), job)


def _job_of(batch: Batch) -> str | None:
    return job_of(batch.name)


def tokens(batch: Batch) -> int:
    """Tokens the batch used so far (prompt and completion)."""
    usage = batch.usage
    if usage is None:
        return 0
    return usage.total_tokens or usage.prompt_tokens + usage.completion_tokens


@dataclass
class JobSummary:
    """A job as the API sees it: its batches and their totals."""

    job: str
    batches: list[Batch] = field(default_factory=list)

    @property
    def state(self) -> str:
        """``running`` while a batch may still answer, ``cancelling`` while one is being
        stopped, else ``ended``."""
        statuses = {b.status for b in self.batches if is_open(b)}
        if statuses & set(RUNNING):
            return "running"
        return "cancelling" if "cancelling" in statuses else "ended"

    @property
    def statuses(self) -> str:
        """How many batches are in each status, e.g. ``1 processing, 2 completed``."""
        counts = Counter(b.status for b in self.batches)
        order = ("created", "pending", "processing", "cancelling", "completed", "failed")
        return ", ".join(f"{counts[s]} {s}" for s in (*order, "cancelled") if counts[s])

    @property
    def newest(self) -> datetime | None:
        """When its newest batch was created."""
        times = [b.created_at for b in self.batches if b.created_at is not None]
        return max(times) if times else None

    def total(self, what: str) -> int:
        """A count summed over the batches: ``request``, ``completed``, ``failed``,
        ``cancelled`` or ``pending``."""
        if what == "pending":
            return sum(b.pending_count for b in self.batches)
        return sum(getattr(b, f"{what}_count") for b in self.batches)

    @property
    def tokens(self) -> int:
        """Tokens used by all its batches so far."""
        return sum(tokens(b) for b in self.batches)


def group_jobs(batches: Iterable[Batch]) -> tuple[list[JobSummary], int]:
    """Batches grouped by job, newest job first; and how many batches no job of
    tablebatch named."""
    jobs: dict[str, JobSummary] = {}
    foreign = 0
    for batch in batches:
        job = _job_of(batch)
        if job is None:
            foreign += 1
            continue
        jobs.setdefault(job, JobSummary(job)).batches.append(batch)
    oldest = datetime.min.replace(tzinfo=UTC)
    ordered = sorted(jobs.values(), key=lambda j: j.newest or oldest, reverse=True)
    return ordered, foreign


@dataclass(frozen=True)
class OutputState:
    """The job's output table: where it is, whether it was written, and its rows."""

    path: str
    written_at: datetime | None = None
    rows_by_status: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        """Rows in the output (every input row once, per model)."""
        return sum(self.rows_by_status.values())

    @property
    def answered(self) -> int:
        """Rows with an answer."""
        return self.rows_by_status.get("completed", 0)

    @property
    def missing(self) -> int:
        """Rows without one: failed, cancelled or skipped (a re-run sends the first two)."""
        return self.rows - self.answered


def output_state(path: str) -> OutputState:
    """What the output at ``path`` holds (nothing, when it is not written yet)."""
    if "://" not in path and not Path(path).exists():
        return OutputState(path)
    table = read_table(path)
    written = None
    if "://" not in path:
        written = datetime.fromtimestamp(Path(path).stat().st_mtime, UTC)
    if "status" not in table.column_names:
        return OutputState(path, written)
    counts = pc.value_counts(table["status"]).to_pylist()
    return OutputState(path, written, {c["values"]: c["counts"] for c in counts})


# -- cancelling ----------------------------------------------------------------------


@dataclass
class CancelOutcome:
    """What a cancel did: the batches as they ended, and their rows."""

    batches: list[Batch] = field(default_factory=list)

    @property
    def answered(self) -> int:
        """Rows answered before the cancel: kept on the API, never sent again."""
        return sum(b.completed_count for b in self.batches)

    @property
    def stopped(self) -> int:
        """Rows the cancel stopped: a later run of the job sends them."""
        return sum(b.cancelled_count for b in self.batches)

    @property
    def failed(self) -> int:
        """Rows that failed before the cancel."""
        return sum(b.failed_count for b in self.batches)

    @property
    def not_ended(self) -> list[Batch]:
        """Batches still not ended when the wait gave up."""
        return [b for b in self.batches if is_open(b)]


def request_cancel(client: BatchAPI, batches: Iterable[Batch]) -> list[Batch]:
    """Ask the API to cancel each batch; a batch that ended meanwhile is left as it is.

    Returns the batches as the API answered (``cancelling`` or ended)."""
    out = []
    for batch in batches:
        try:
            out.append(client.cancel(batch.id))
        except (ConflictError, BadRequestError):  # it ended between the list and the cancel
            ended = client.get_batch(batch.id)
            if is_open(ended):
                raise
            out.append(ended)
    return out


def wait_ended(
    client: BatchAPI,
    batches: list[Batch],
    *,
    timeout_s: float = 300.0,
    poll_s: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> list[Batch]:
    """Poll until every batch has ended (or ``timeout_s`` passed); returns them as last seen."""
    deadline = clock() + timeout_s
    current = {b.id: b for b in batches}
    while True:
        for batch_id, batch in list(current.items()):
            if is_open(batch):
                current[batch_id] = client.get_batch(batch_id)
        if not any(is_open(b) for b in current.values()) or clock() >= deadline:
            return [current[b.id] for b in batches]
        sleep(poll_s)


def cancel_batches(
    client: BatchAPI,
    batches: Iterable[Batch],
    *,
    wait: bool = True,
    timeout_s: float = 300.0,
    poll_s: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> CancelOutcome:
    """Cancel ``batches`` and (with ``wait``) wait until they are ``cancelled``.

    Answered requests keep their results on the API: a later run of the job
    collects them and sends only the rest."""
    asked = request_cancel(client, batches)
    if wait:
        asked = wait_ended(
            client, asked, timeout_s=timeout_s, poll_s=poll_s, sleep=sleep, clock=clock
        )
    return CancelOutcome(asked)


# -- which job, from the command line or a flow's parameter ---------------------------------


@dataclass
class JobTarget:
    """A job to manage: its name, its project folder and, when there is one, its config."""

    name: str
    root: Path
    config: JobConfig | None = None
    config_path: Path | None = None

    @property
    def output_path(self) -> str | None:
        """Where its output goes (None without a config)."""
        if self.config is None:
            return None
        return resolve(self.config.output.path or default_output(self.config.name), self.root)


def find_job(arg: str, root: Path) -> JobTarget:
    """CONFIG|JOB: a config file (as given, or under the project folder ``root``), or a
    job's name — its config in ``<root>/configs/`` when one has that name, else the name
    alone (its batches are then looked up on the project's local server)."""
    path = Path(arg).expanduser()
    candidates = [path] if path.is_absolute() else [path, root / path]
    for candidate in candidates:
        if candidate.is_file():
            config = load_config(candidate)
            return JobTarget(config.name, project_root(candidate), config, candidate)
    if path.suffix.lower() in (".yaml", ".yml") or "/" in arg:
        raise ConfigError(f"{arg}: no such config file")
    if not JOB_NAME.match(arg):
        raise ConfigError(
            f"{arg!r} is neither a config file nor a job name (1-64 letters, digits, '.', '_' "
            "or '-'); give a config path, e.g. configs/review-sentiment.yaml, or a job's name"
        )
    for candidate in sorted((root / "configs").glob("*.y*ml")):
        try:
            data = yaml.safe_load(candidate.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and data.get("name") == arg:
            return JobTarget(arg, root, load_config(candidate), candidate)
    return JobTarget(arg, root)
