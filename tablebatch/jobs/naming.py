"""Batch names: how a job names its batches, and how a name is read back. One home.

A batch is named ``<job>--<stage>-<fingerprint>--a<attempt>--<content>``: the job,
the stage (``answer``, or ``judge``), the fingerprint of what shapes its requests
(prompt, model, params), the attempt of the run that sent it, and what it holds: 8 hex
digits of the digest of its requests' ids, which are themselves digests of what each
request sends (``tablebatch.jobs.build.request_id``). A batch of the same requests has
the same name, whatever the order or the size of the table it came from; a run that
crashed finds its batch again by recomputing it. (Names of older versions end in
``--s<shard>``, a shard's position; they are still read.) A batch too large in bytes
for one goes as ``<name>-1``, ``<name>-2``, …
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

import orjson

JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
Stage = Literal["answer", "judge"]
STAGES: tuple[str, ...] = get_args(Stage)
_NAME = re.compile(
    r"^(?P<job>.+)--(?P<stage>[a-z]+)-(?P<fingerprint>[0-9a-f]{8})"
    r"--a(?P<attempt>\d+)--(?:s(?P<shard>\d+)|(?P<content>[0-9a-f]{8}))(?:-(?P<piece>\d+))?$"
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
    shard: int | str  # what it holds: a digest of its requests (an int: a shard's position)
    piece: int = 0  # the piece of a batch too large in bytes for one

    def __str__(self) -> str:
        prefix = stage_prefix(self.job, self.stage, self.fingerprint)
        content = f"s{self.shard:04d}" if isinstance(self.shard, int) else self.shard
        return piece_name(f"{prefix}a{self.attempt}--{content}", self.piece)


def stage_prefix(job: str, stage: str, fingerprint: str) -> str:
    """What the names of every batch of one stage and prompt of a job start with."""
    return f"{job}--{stage}-{fingerprint}--"


def job_prefix(job: str) -> str:
    """What the names of every batch of a job start with."""
    return f"{job}--"


def batch_prefix(job: str | Named, stage: str, fingerprint: str, attempt: int) -> str:
    """What the names of an attempt's batches start with (a name less its shard)."""
    return f"{stage_prefix(_job(job), stage, fingerprint)}a{attempt}--"


def batch_name(
    job: str | Named, stage: str, fingerprint: str, attempt: int, shard: int | str
) -> str:
    """The deterministic name of a batch (``shard``: the digest of what it holds,
    ``content_digest``): how a re-run finds it again."""
    return str(BatchName(_job(job), stage, fingerprint, attempt, shard))


def content_digest(custom_ids: Iterable[str]) -> str:
    """8 hex digits naming a set of requests (by their ids), whatever their order."""
    digest = hashlib.blake2b(digest_size=4)
    for custom_id in sorted(custom_ids):
        digest.update(custom_id.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def piece_name(name: str, piece: int) -> str:
    """The name of the ``piece``-th batch of a shard too large in bytes for one batch."""
    return name if piece == 0 else f"{name}-{piece}"


def parse_batch_name(name: str) -> BatchName | None:
    """The parts of a name tablebatch gave a batch; None for a batch it did not name."""
    match = _NAME.match(name)
    if match is None or not JOB_NAME.match(match["job"]):
        return None
    shard = int(match["shard"]) if match["shard"] is not None else match["content"]
    return BatchName(
        match["job"],
        match["stage"],
        match["fingerprint"],
        int(match["attempt"]),
        shard,
        int(match["piece"] or 0),
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
