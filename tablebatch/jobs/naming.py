"""Batch names: how a job names its batches, and how a name is read back. One home.

A batch is named ``<job>--<stage>-<fingerprint>--a<attempt>--s<shard>``: the job,
the stage (``answer``, or ``judge``), the fingerprint of what shapes its requests
(prompt, model, params), the attempt and the shard. The API alone then says which
batches are a job's, how far each got, and which a re-run may collect: no local
file is needed to resume.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

import orjson

JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
Stage = Literal["answer", "judge"]
STAGES: tuple[str, ...] = get_args(Stage)
_NAME = re.compile(
    r"^(?P<job>.+)--(?P<stage>[a-z]+)-(?P<fingerprint>[0-9a-f]{8})"
    r"--a(?P<attempt>\d+)--s(?P<shard>\d+)$"
)


class Named(Protocol):
    """Anything with a job's name (a job config)."""

    name: str


def _job(job: str | Named) -> str:
    return job if isinstance(job, str) else job.name


@dataclass(frozen=True)
class BatchName:
    """What a batch's name says: its job, stage, prompt fingerprint, attempt and shard."""

    job: str
    stage: str
    fingerprint: str
    attempt: int
    shard: int

    def __str__(self) -> str:
        prefix = stage_prefix(self.job, self.stage, self.fingerprint)
        return f"{prefix}a{self.attempt}--s{self.shard:04d}"


def stage_prefix(job: str, stage: str, fingerprint: str) -> str:
    """What the names of every batch of one stage and prompt of a job start with."""
    return f"{job}--{stage}-{fingerprint}--"


def job_prefix(job: str) -> str:
    """What the names of every batch of a job start with."""
    return f"{job}--"


def batch_prefix(job: str | Named, stage: str, fingerprint: str, attempt: int) -> str:
    """What the names of an attempt's batches start with (a name less its shard)."""
    return f"{stage_prefix(_job(job), stage, fingerprint)}a{attempt}--"


def batch_name(job: str | Named, stage: str, fingerprint: str, attempt: int, shard: int) -> str:
    """The deterministic name of a shard's batch: how a re-run finds it again."""
    return str(BatchName(_job(job), stage, fingerprint, attempt, shard))


def piece_name(name: str, piece: int) -> str:
    """The name of the ``piece``-th batch of a shard too large in bytes for one batch."""
    return name if piece == 0 else f"{name}-{piece}"


def parse_batch_name(name: str) -> BatchName | None:
    """The parts of a name tablebatch gave a batch; None for a batch it did not name."""
    match = _NAME.match(name)
    if match is None or not JOB_NAME.match(match["job"]):
        return None
    return BatchName(
        match["job"],
        match["stage"],
        match["fingerprint"],
        int(match["attempt"]),
        int(match["shard"]),
    )


def job_of(name: str) -> str | None:
    """The job a batch's name says it belongs to (None for a batch tablebatch did not name)."""
    parsed = parse_batch_name(name)
    return parsed.job if parsed else None


def batch_description(job: str, model: str, stage: str, attempt: int, rows: int) -> str:
    """What the batch is, for a person reading the API's batch list."""
    return orjson.dumps(
        {"job": job, "stage": stage, "model": model, "attempt": attempt, "rows": rows}
    ).decode()
