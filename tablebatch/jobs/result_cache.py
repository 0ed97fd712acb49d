"""The results of ended batches, kept on disk: a re-run reads each batch from the API once.

A batch that has ended (completed, failed, cancelled, expired) never changes: its
results are what they will always be. So the first run that reads one keeps them all
in a Parquet file, and a later run that lists the same batch, ended with the same
counts, reads the file instead of paging the API again (what makes an incremental
run over a million answered rows cost what its new rows cost). The API stays the
truth: a run lists the job's batches there first, and only a batch so listed is read
from the cache, so a fresh machine (no cache) reads the API and finds everything;
a file that is missing, unreadable or describes the batch differently is ignored and
the API read again. The folder can be deleted at any time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tablebatch.api import Batch

log = logging.getLogger("tablebatch.jobs")
KEY = b"tablebatch.batch"  # the schema metadata that says which batch a file holds


def cache_folder(root: Path | str, job: str) -> Path:
    """Where a job's cached results live, in its project."""
    return Path(root) / ".tablebatch" / "results" / job


def _key(batch: Batch) -> bytes:
    """What identifies an ended batch's results: its id, how it ended and its counts."""
    return json.dumps(
        [
            batch.id,
            batch.status,
            batch.request_count,
            batch.completed_count,
            batch.failed_count,
            batch.cancelled_count,
        ]
    ).encode()


class ResultCache:
    """Every result of the job's ended batches, a file per batch."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.hits = 0  # batches read from here rather than from the API, this run

    def _path(self, batch: Batch) -> Path:
        return self.folder / f"{batch.id}.parquet"

    def get(self, batch: Batch) -> pa.Table | None:
        """The batch's results as first read from the API (None: read it there)."""
        if not batch.is_terminal:
            return None
        path = self._path(batch)
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException):  # absent, or a torn or foreign file
            return None
        if (table.schema.metadata or {}).get(KEY) != _key(batch):
            return None  # the batch now says otherwise: the API is the truth
        self.hits += 1
        return table.replace_schema_metadata(None)

    def path(self, batch: Batch) -> Path:
        """The file that keeps (or would keep) the batch's results."""
        return self._path(batch)

    def put(self, batch: Batch, results: pa.Table) -> None:
        """Keep every result of an ended batch (a partial read must not be passed here).
        Written under another name and renamed, so a crash leaves no torn file; a cache
        that cannot be written (a full or read-only disk) only costs a read next time."""
        if not batch.is_terminal:
            return
        path = self._path(batch)
        part = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(results.replace_schema_metadata({KEY: _key(batch)}), part)
            os.replace(part, path)
        except OSError as exc:
            log.warning("could not keep the results of batch %s in %s: %s", batch.id, path, exc)
            with contextlib.suppress(OSError):
                part.unlink()
