"""The server's state: batches, their requests and results, in SQLite.

``Store`` is the one entry: it is assembled from one section per table or
concern, each in its own module:

    schema.py       the tables, and migrating a database file an older server wrote
    records.py      StoredBatch, StoredFile, Outcome: the rows as the server sees them
    base.py         the connection, its lock and transactions (StoreBase)
    results.py      recording a chunk's results; paging requests and results (cursors)
    batches.py      create, list, add requests, start, cancel, reject
    files.py        a dialect's files and a finished batch's output files
    idempotency.py  the first answer to each Idempotency-Key
    processing.py   the worker's side: what to work on, and ending batches

A file database runs in WAL mode, so a killed server loses nothing that was
answered: each call and each chunk of results is one transaction.
"""

from __future__ import annotations

from tablebatch.server.store.files import FileSection
from tablebatch.server.store.idempotency import IdempotencySection
from tablebatch.server.store.processing import ProcessingSection
from tablebatch.server.store.records import (
    BATCH_STATUSES,
    REQUEST_STATUSES,
    TERMINAL,
    Outcome,
    StoredBatch,
    StoredFile,
    encode_result,
    request_id,
    rfc3339,
)

__all__ = [
    "BATCH_STATUSES",
    "REQUEST_STATUSES",
    "TERMINAL",
    "Outcome",
    "Store",
    "StoredBatch",
    "StoredFile",
    "encode_result",
    "request_id",
    "rfc3339",
]


class Store(FileSection, ProcessingSection, IdempotencySection):
    """Batches, requests, results, files and idempotency records in one SQLite database."""
