"""The server's state: batches, their requests and results, in SQLite.

One connection behind one lock: SQLite serialises writers anyway, and a single
writer keeps every count exact. A file database runs in WAL mode, so a killed
server loses nothing that was answered: each call and each chunk of results is
one transaction. Results are stored as the exact JSON they are served as, so
paging them is a concatenation, not a re-encoding.

Ordering and cursors: batches are listed newest first (a cursor ``after`` is the
id of the last batch of the previous page, and new batches land before the
walk); requests in the order they were added; results in the order they were
written (new results land after the walk's position). Either way a walk sees
every item once.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from tablebatch.server.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge
from tablebatch.server.settings import Limits

BATCH_STATUSES = (
    "created",
    "pending",
    "processing",
    "completed",
    "failed",
    "cancelling",
    "cancelled",
    "expired",  # dialect batches only: past their window, pending requests expired
)
REQUEST_STATUSES = ("pending", "completed", "failed", "cancelled", "expired")
TERMINAL = frozenset({"completed", "failed", "cancelled", "expired"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    description TEXT,
    model TEXT,
    endpoint TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    request_count INTEGER NOT NULL DEFAULT 0,
    completed_count INTEGER NOT NULL DEFAULT 0,
    failed_count INTEGER NOT NULL DEFAULT 0,
    cancelled_count INTEGER NOT NULL DEFAULT 0,
    request_bytes INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    dialect TEXT NOT NULL DEFAULT 'seed',
    meta TEXT,
    cancel_requested_at REAL
);
CREATE INDEX IF NOT EXISTS ix_batches_status ON batches(status, seq);
CREATE INDEX IF NOT EXISTS ix_batches_name ON batches(name, seq);
CREATE TABLE IF NOT EXISTS requests (
    n INTEGER PRIMARY KEY,
    batch_seq INTEGER NOT NULL,
    custom_id TEXT NOT NULL,
    body BLOB NOT NULL,
    status TEXT NOT NULL,
    result_seq INTEGER,
    result BLOB
);
CREATE UNIQUE INDEX IF NOT EXISTS ux_requests_custom_id ON requests(batch_seq, custom_id);
CREATE INDEX IF NOT EXISTS ix_requests_status ON requests(batch_seq, status);
CREATE INDEX IF NOT EXISTS ix_requests_results ON requests(batch_seq, result_seq)
    WHERE result_seq IS NOT NULL;
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    purpose TEXT NOT NULL,
    filename TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    created_at REAL NOT NULL,
    content BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    status_code INTEGER NOT NULL,
    response BLOB NOT NULL,
    created_at REAL NOT NULL
);
"""

_BATCH_COLUMNS = (
    "seq, id, name, description, model, endpoint, status, created_at, started_at, ended_at, "
    "request_count, completed_count, failed_count, cancelled_count, request_bytes, "
    "prompt_tokens, completion_tokens, error, dialect, meta, cancel_requested_at"
)
# columns added after the first release, with their definitions, for older database files
_ADDED_COLUMNS = {
    "dialect": "TEXT NOT NULL DEFAULT 'seed'",
    "meta": "TEXT",
    "cancel_requested_at": "REAL",
}


def rfc3339(ts: float | None) -> str | None:
    """Format epoch seconds as RFC 3339 in UTC, the way the spec shows (``…T10:00:00Z``)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def request_id(n: int) -> str:
    """The public id of the request stored as row ``n``."""
    return f"req_{n:012x}"


_REQUEST_ID = re.compile(r"req_([0-9a-f]{12})")


def _request_n(rid: str) -> int | None:
    match = _REQUEST_ID.fullmatch(rid)
    return int(match.group(1), 16) if match else None


@dataclass(frozen=True)
class Batch:
    """A batch row, as the worker and the HTTP layer see it."""

    seq: int
    id: str
    name: str
    description: str | None
    model: str | None
    endpoint: str
    status: str
    created_at: float
    started_at: float | None
    ended_at: float | None
    request_count: int
    completed_count: int
    failed_count: int
    cancelled_count: int
    request_bytes: int
    prompt_tokens: int
    completion_tokens: int
    error: str | None
    dialect: str = "seed"
    meta: str | None = None
    cancel_requested_at: float | None = None

    @property
    def info(self) -> dict[str, Any]:
        """What a dialect keeps about the batch (its ``meta`` JSON), or ``{}``."""
        return orjson.loads(self.meta) if self.meta else {}

    @property
    def pending_count(self) -> int:
        """Requests not yet ended."""
        return self.request_count - self.completed_count - self.failed_count - self.cancelled_count

    def to_api(self) -> dict[str, Any]:
        """The batch object of the API."""
        ended = rfc3339(self.ended_at)
        return {
            "id": self.id,
            "object": "batch",
            "name": self.name,
            "description": self.description,
            "model": self.model,
            "endpoint": self.endpoint,
            "status": self.status,
            "created_at": rfc3339(self.created_at),
            "started_at": rfc3339(self.started_at),
            "completed_at": ended if self.status == "completed" else None,
            "failed_at": ended if self.status == "failed" else None,
            "cancelled_at": ended if self.status == "cancelled" else None,
            "request_count": self.request_count,
            "completed_count": self.completed_count,
            "failed_count": self.failed_count,
            "cancelled_count": self.cancelled_count,
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
            },
            "error": orjson.loads(self.error) if self.error else None,
        }


@dataclass(frozen=True)
class StoredFile:
    """A file kept for a dialect (OpenAI's uploads and batch outputs)."""

    id: str
    purpose: str
    filename: str
    bytes: int
    created_at: float
    content: bytes | None = None  # only when asked for


@dataclass(frozen=True)
class Work:
    """A chunk of pending requests of one processing batch, taken by the worker."""

    batch: Batch
    rows: list[tuple[int, str, bytes]]  # (n, custom_id, body)


@dataclass(frozen=True)
class Outcome:
    """What the backend made of one request: a response or an error."""

    n: int
    custom_id: str
    response: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    encoded: bytes | None = None  # the result's JSON, when the backend built it already


def encode_result(n: int, custom_id: str, status: str, key: str, value: Any) -> bytes:
    """The JSON of a result object, as it is stored and served."""
    return orjson.dumps({"id": request_id(n), "custom_id": custom_id, "status": status, key: value})


class Store:
    """Batches, requests, results and idempotency records in one SQLite database."""

    def __init__(
        self, path: str, limits: Limits | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.limits = limits or Limits()
        self._clock = clock
        self._lock = threading.RLock()
        self._depth = 0
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        if path != ":memory:":
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA busy_timeout=10000")
        self._conn.executescript(_SCHEMA)
        self._migrate()
        row = self._conn.execute("SELECT MAX(result_seq) FROM requests").fetchone()
        self._result_seq = row[0] or 0

    def _migrate(self) -> None:
        """Add the columns that a database file written by an older server lacks."""
        have = {r[1] for r in self._conn.execute("PRAGMA table_info(batches)")}
        for column, definition in _ADDED_COLUMNS.items():
            if column not in have:
                self._conn.execute(f"ALTER TABLE batches ADD COLUMN {column} {definition}")
        self._conn.execute("CREATE INDEX IF NOT EXISTS ix_batches_dialect ON batches(dialect, seq)")

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Several store calls as one transaction (each call joins it): all or none."""
        with self._tx():
            yield

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction; nested uses join the outer one."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._conn
                finally:
                    self._depth -= 1
                return
            self._conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")
            finally:
                self._depth = 0

    # -- batches ---------------------------------------------------------------

    def _batch(self, conn: sqlite3.Connection, batch_id: str, dialect: str = "seed") -> Batch:
        row = conn.execute(f"SELECT {_BATCH_COLUMNS} FROM batches WHERE id = ?", (batch_id,))
        found = row.fetchone()
        if found is None or Batch(*found).dialect != dialect:
            raise NotFound(f"No batch with id {batch_id!r}.")
        return Batch(*found)

    def get_batch(self, batch_id: str, dialect: str = "seed") -> Batch:
        """The batch with this id, or NotFound (also when it belongs to another dialect)."""
        with self._tx() as conn:
            return self._batch(conn, batch_id, dialect)

    def create_batch(
        self,
        name: str,
        description: str | None,
        model: str | None,
        endpoint: str,
        *,
        dialect: str = "seed",
        batch_id: str | None = None,
        meta: dict[str, Any] | None = None,
        expires_in: float | None = None,
    ) -> Batch:
        """Create an empty batch (status ``created``); a dialect names its own id, and a
        batch with ``expires_in`` (seconds) expires then (see ``expire_due``)."""
        batch_id = batch_id or "batch_" + secrets.token_hex(12)
        now = self._clock()
        if expires_in is not None:
            meta = {**(meta or {}), "expires_at": now + expires_in}
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO batches (id, name, description, model, endpoint, status, created_at,"
                " dialect, meta) VALUES (?, ?, ?, ?, ?, 'created', ?, ?, ?)",
                (
                    batch_id,
                    name,
                    description,
                    model,
                    endpoint,
                    now,
                    dialect,
                    orjson.dumps(meta).decode() if meta else None,
                ),
            )
            return self._batch(conn, batch_id, dialect)

    def update_meta(self, batch_id: str, dialect: str, **changes: Any) -> Batch:
        """Merge ``changes`` into what a dialect keeps about a batch."""
        with self._tx() as conn:
            batch = self._batch(conn, batch_id, dialect)
            meta = {**batch.info, **changes}
            conn.execute(
                "UPDATE batches SET meta = ? WHERE seq = ?",
                (orjson.dumps(meta).decode(), batch.seq),
            )
            return self._batch(conn, batch_id, dialect)

    def list_batches(
        self,
        limit: int,
        after: str | None,
        status: str | None,
        name: str | None,
        name_prefix: str | None = None,
        *,
        dialect: str = "seed",
        before: str | None = None,
    ) -> tuple[list[Batch], bool]:
        """A page of a dialect's batches, newest first, and whether more follow.

        ``after`` pages toward older batches; ``before`` toward newer ones (the
        page is the ``limit`` batches just newer than it, still newest first)."""
        clauses: list[str] = ["dialect = ?"]
        params: list[Any] = [dialect]
        order = "DESC"
        with self._tx() as conn:
            for cursor, what, op in ((after, "after", "<"), (before, "before", ">")):
                if cursor is None:
                    continue
                row = conn.execute(
                    "SELECT seq FROM batches WHERE id = ? AND dialect = ?", (cursor, dialect)
                ).fetchone()
                if row is None:
                    edge = "last batch of the previous" if what == "after" else "first batch of a"
                    raise InvalidRequest(
                        f"{what}: no batch {cursor!r}; pass the id of the {edge} page."
                    )
                clauses.append(f"seq {op} ?")
                params.append(row[0])
                if what == "before":
                    order = "ASC"
            if status is not None:
                clauses.append("status = ?")
                params.append(status)
            if name is not None:
                clauses.append("name = ?")
                params.append(name)
            if name_prefix:
                clauses.append("substr(name, 1, ?) = ?")
                params += [len(name_prefix), name_prefix]
            rows = conn.execute(
                f"SELECT {_BATCH_COLUMNS} FROM batches WHERE {' AND '.join(clauses)} "
                f"ORDER BY seq {order} LIMIT ?",
                (*params, limit + 1),
            ).fetchall()
        page = [Batch(*r) for r in rows[:limit]]
        if order == "ASC":
            page.reverse()
        return page, len(rows) > limit

    def add_requests(
        self,
        batch_id: str,
        items: Sequence[tuple[str, bytes]],
        *,
        dialect: str = "seed",
        rejected: Mapping[str, dict[str, str]] | None = None,
        while_processing: bool = False,
    ) -> Batch:
        """Add requests ``(custom_id, body JSON)`` to a batch: all of them or none.

        ``rejected`` maps custom_ids of ``items`` to an error they end with at once, for
        dialects that check a request's body only when they process it, as the providers
        do. With ``while_processing`` (xAI, where adding requests is what starts the work)
        a batch takes requests until it is cancelled or failed, and is processing after.
        """
        limits = self.limits
        with self._tx() as conn:
            batch = self._batch(conn, batch_id, dialect)
            if while_processing:
                if batch.status not in ("created", "pending", "processing", "completed"):
                    raise Conflict(
                        f"Batch {batch_id} is {batch.status}: it takes no more requests. Put "
                        "further requests in a new batch."
                    )
            elif batch.status not in ("created", "pending"):
                raise Conflict(
                    f"Batch {batch_id} is {batch.status}: requests can be added only before it "
                    "is started (status created or pending). Put further requests in a new batch."
                )
            count = batch.request_count + len(items)
            if count > limits.max_requests_per_batch:
                raise PayloadTooLarge(
                    f"Batch {batch_id} would hold {count} requests; the limit is "
                    f"{limits.max_requests_per_batch} per batch. Split the work into several "
                    "batches."
                )
            size = batch.request_bytes + sum(len(body) for _, body in items)
            if size > limits.max_bytes_per_batch:
                raise PayloadTooLarge(
                    f"Batch {batch_id} would hold {size} bytes of requests; the limit is "
                    f"{limits.max_bytes_per_batch} bytes per batch. Split the work into several "
                    "batches."
                )
            conn.execute("SAVEPOINT add_requests")
            try:
                conn.executemany(
                    "INSERT INTO requests (batch_seq, custom_id, body, status) "
                    "VALUES (?, ?, ?, 'pending')",
                    [(batch.seq, cid, body) for cid, body in items],
                )
            except sqlite3.IntegrityError:
                conn.execute("ROLLBACK TO add_requests")
                conn.execute("RELEASE add_requests")
                existing = [c for _, c in self._rows_of(conn, batch.seq, [c for c, _ in items])]
                shown = ", ".join(repr(c) for c in existing[:10])
                more = f" and {len(existing) - 10} more" if len(existing) > 10 else ""
                raise Conflict(
                    f"{len(existing)} custom_id(s) already exist in batch {batch_id}: {shown}"
                    f"{more}. Nothing was added; send only the requests the batch does not "
                    "hold yet.",
                    custom_ids=existing,
                ) from None
            conn.execute("RELEASE add_requests")
            if while_processing:
                conn.execute(
                    "UPDATE batches SET request_count = ?, request_bytes = ?, "
                    "status = 'processing', started_at = COALESCE(started_at, ?), ended_at = NULL "
                    "WHERE seq = ?",
                    (count, size, self._clock(), batch.seq),
                )
            else:
                conn.execute(
                    "UPDATE batches SET request_count = ?, request_bytes = ?, status = 'pending' "
                    "WHERE seq = ?",
                    (count, size, batch.seq),
                )
            if rejected:
                rows = self._rows_of(conn, batch.seq, list(rejected))
                self.record(batch.seq, [Outcome(n, c, error=rejected[c]) for n, c in rows])
            return self._batch(conn, batch_id, dialect)

    @staticmethod
    def _rows_of(
        conn: sqlite3.Connection, batch_seq: int, custom_ids: list[str]
    ) -> list[tuple[int, str]]:
        """``(n, custom_id)`` of the requests of a batch with these custom_ids."""
        found: list[tuple[int, str]] = []
        for i in range(0, len(custom_ids), 900):
            chunk = custom_ids[i : i + 900]
            marks = ",".join("?" * len(chunk))
            found += conn.execute(
                f"SELECT n, custom_id FROM requests WHERE batch_seq = ? AND custom_id IN ({marks})",
                (batch_seq, *chunk),
            ).fetchall()
        return found

    def start(self, batch_id: str, dialect: str = "seed") -> Batch:
        """Move a batch with requests from ``pending`` to ``processing``."""
        with self._tx() as conn:
            batch = self._batch(conn, batch_id, dialect)
            if batch.status == "created":
                raise Conflict(f"Batch {batch_id} has no requests: add requests, then start it.")
            if batch.status != "pending":
                raise Conflict(
                    f"Batch {batch_id} is {batch.status}: only a pending batch (one with "
                    "requests, not yet started) can be started."
                )
            conn.execute(
                "UPDATE batches SET status = 'processing', started_at = ? WHERE seq = ?",
                (self._clock(), batch.seq),
            )
            return self._batch(conn, batch_id, dialect)

    def cancel(self, batch_id: str, dialect: str = "seed") -> Batch:
        """Ask to cancel a batch: it becomes ``cancelling``; the worker ends it."""
        with self._tx() as conn:
            batch = self._batch(conn, batch_id, dialect)
            if batch.status in TERMINAL:
                raise Conflict(f"Batch {batch_id} is already {batch.status}: nothing to cancel.")
            if batch.status != "cancelling":
                conn.execute(
                    "UPDATE batches SET status = 'cancelling', cancel_requested_at = ? "
                    "WHERE seq = ?",
                    (self._clock(), batch.seq),
                )
            return self._batch(conn, batch_id, dialect)

    def reject(self, batch_id: str, dialect: str, error: Any) -> Batch:
        """Fail a batch that never started (its input was refused), keeping ``error``."""
        with self._tx() as conn:
            batch = self._batch(conn, batch_id, dialect)
            if batch.status not in ("created", "pending"):
                raise Conflict(f"Batch {batch_id} is {batch.status}: it has started already.")
            conn.execute(
                "UPDATE batches SET status = 'failed', ended_at = ?, error = ? WHERE seq = ?",
                (self._clock(), orjson.dumps(error).decode(), batch.seq),
            )
            return self._batch(conn, batch_id, dialect)

    # -- requests and results --------------------------------------------------

    def list_requests(
        self,
        batch_id: str,
        limit: int,
        after: str | None,
        status: str | None,
        *,
        dialect: str = "seed",
        models: bool = False,
    ) -> tuple[list[dict[str, str]], bool]:
        """A page of a batch's requests, in the order they were added (with ``models``,
        each names the model its body asks for)."""
        with self._tx() as conn:
            batch = self._batch(conn, batch_id, dialect)
            after_n = 0
            if after is not None:
                after_n = self._cursor_row(conn, batch, after, "n")
            clause, params = ("AND status = ?", (status,)) if status else ("", ())
            body = ", body" if models else ""
            rows = conn.execute(
                f"SELECT n, custom_id, status{body} FROM requests WHERE batch_seq = ? AND n > ? "
                f"{clause} ORDER BY n LIMIT ?",
                (batch.seq, after_n, *params, limit + 1),
            ).fetchall()
        items = [{"id": request_id(r[0]), "custom_id": r[1], "status": r[2]} for r in rows[:limit]]
        if models:
            for item, row in zip(items, rows, strict=False):
                item["model"] = orjson.loads(row[3]).get("model")
        return items, len(rows) > limit

    def results_page(
        self, batch_id: str, limit: int, after: str | None, *, dialect: str = "seed"
    ) -> tuple[list[bytes], bool]:
        """A page of a batch's results (JSON objects), in the order they were written."""
        with self._tx() as conn:
            batch = self._batch(conn, batch_id, dialect)
            after_seq = 0
            if after is not None:
                after_seq = self._cursor_row(conn, batch, after, "result_seq")
            rows = conn.execute(
                "SELECT result FROM requests WHERE batch_seq = ? AND result_seq > ? "
                "ORDER BY result_seq LIMIT ?",
                (batch.seq, after_seq, limit + 1),
            ).fetchall()
        return [r[0] for r in rows[:limit]], len(rows) > limit

    def iter_outcomes(
        self, batch_id: str, dialect: str, chunk: int = 1000
    ) -> Iterator[list[tuple[int, str, str, bytes | None]]]:
        """Every request of a batch as ``(n, custom_id, status, result JSON or None)``, in
        the order they were added, a chunk at a time (each chunk one short transaction)."""
        batch = self.get_batch(batch_id, dialect)
        after_n = 0
        while True:
            with self._tx() as conn:
                rows = conn.execute(
                    "SELECT n, custom_id, status, result FROM requests WHERE batch_seq = ? "
                    "AND n > ? ORDER BY n LIMIT ?",
                    (batch.seq, after_n, chunk),
                ).fetchall()
            if not rows:
                return
            yield rows
            after_n = rows[-1][0]

    @staticmethod
    def _cursor_row(conn: sqlite3.Connection, batch: Batch, after: str, column: str) -> int:
        n = _request_n(after)
        row = None
        if n is not None:
            row = conn.execute(
                f"SELECT {column} FROM requests WHERE n = ? AND batch_seq = ?", (n, batch.seq)
            ).fetchone()
        if row is None or row[0] is None:
            what = "result" if column == "result_seq" else "request"
            raise InvalidRequest(
                f"after: {after!r} is not a {what} of batch {batch.id}; pass the id of the last "
                "item of the previous page."
            )
        return int(row[0])

    # -- files -----------------------------------------------------------------

    def create_file(self, purpose: str, filename: str, content: bytes) -> StoredFile:
        """Keep a file; its id is ``file-`` and 24 random characters, as OpenAI's are."""
        file_id = "file-" + secrets.token_urlsafe(18).replace("-", "x").replace("_", "y")
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO files (id, purpose, filename, bytes, created_at, content) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (file_id, purpose, filename, len(content), self._clock(), content),
            )
        return self.get_file(file_id)

    def get_file(self, file_id: str, *, content: bool = False) -> StoredFile:
        """The file with this id (with its content if asked), or NotFound."""
        column = ", content" if content else ""
        with self._tx() as conn:
            row = conn.execute(
                f"SELECT id, purpose, filename, bytes, created_at{column} FROM files WHERE id = ?",
                (file_id,),
            ).fetchone()
        if row is None:
            raise NotFound(f"No such File object: {file_id}")
        return StoredFile(*row)

    def attach_outputs(
        self,
        batch_id: str,
        dialect: str,
        render: Callable[[Batch, Iterator[list[tuple[int, str, str, bytes | None]]]], dict],
    ) -> Batch:
        """Write a finished batch's output files once, and name them in its meta.

        ``render`` gets the batch and its requests (see ``iter_outcomes``) and returns
        ``{meta key: (filename, content) or None}``; each file is stored with purpose
        ``batch_output``. It runs in the transaction that records the files, so two
        callers never write two sets."""
        with self._tx() as conn:
            batch = self._batch(conn, batch_id, dialect)
            if batch.status not in TERMINAL or batch.info.get("outputs"):
                return batch
            files = render(batch, self.iter_outcomes(batch_id, dialect))
            changes: dict[str, Any] = {"outputs": True}
            for key, file in files.items():
                changes[key] = self.create_file("batch_output", *file).id if file else None
            return self.update_meta(batch_id, dialect, **changes)

    # -- idempotency -----------------------------------------------------------

    def idempotent(
        self, key: str | None, fingerprint: str, op: Callable[[], tuple[int, bytes]]
    ) -> tuple[int, bytes, bool]:
        """Run ``op`` once per key: a repeat with the same fingerprint gets the first answer.

        Returns the status, the body and whether it is a replay.

        The record is written in the same transaction as the effect, so a crash
        leaves either both or neither. Only successful answers are kept: a call
        that failed had no effect and may be tried again.
        """
        if key is None:
            return (*op(), False)
        with self._tx() as conn:
            row = conn.execute(
                "SELECT fingerprint, status_code, response FROM idempotency WHERE key = ?", (key,)
            ).fetchone()
            if row is not None:
                if row[0] != fingerprint:
                    raise Conflict(
                        "This Idempotency-Key was already used for a different request. Use a "
                        "new key for each new call, and the same key only to retry the same call."
                    )
                return int(row[1]), bytes(row[2]), True
            status_code, body = op()
            conn.execute(
                "INSERT INTO idempotency (key, fingerprint, status_code, response, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (key, fingerprint, status_code, body, self._clock()),
            )
            return status_code, body, False

    def prune_idempotency(self, ttl_s: float) -> int:
        """Forget idempotency records older than ``ttl_s``; returns how many."""
        with self._tx() as conn:
            cur = conn.execute(
                "DELETE FROM idempotency WHERE created_at < ?", (self._clock() - ttl_s,)
            )
            return cur.rowcount

    # -- the worker's side ------------------------------------------------------

    def cancelling_batches(self) -> list[Batch]:
        """Batches waiting for the worker to finish their cancellation."""
        with self._tx() as conn:
            rows = conn.execute(
                f"SELECT {_BATCH_COLUMNS} FROM batches WHERE status = 'cancelling' ORDER BY seq"
            ).fetchall()
        return [Batch(*r) for r in rows]

    def finish_cancel(self, batch_seq: int) -> None:
        """Mark a cancelling batch's pending requests cancelled, and the batch cancelled."""
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE requests SET status = 'cancelled' "
                "WHERE batch_seq = ? AND status = 'pending'",
                (batch_seq,),
            )
            conn.execute(
                "UPDATE batches SET status = 'cancelled', ended_at = ?, "
                "cancelled_count = cancelled_count + ? WHERE seq = ? AND status = 'cancelling'",
                (self._clock(), cur.rowcount, batch_seq),
            )

    def expire_due(self) -> list[str]:
        """Expire the unfinished batches whose window has passed: their pending requests
        become ``expired`` (counted with the cancelled ones, and as ``expired_count`` in
        the meta); answered requests keep their results. Returns the expired batches' ids."""
        now = self._clock()
        with self._tx() as conn:
            due = conn.execute(
                f"SELECT {_BATCH_COLUMNS} FROM batches WHERE status IN "
                "('created', 'pending', 'processing', 'cancelling') AND meta IS NOT NULL "
                "AND json_extract(meta, '$.expires_at') <= ?",
                (now,),
            ).fetchall()
            for batch in (Batch(*r) for r in due):
                cur = conn.execute(
                    "UPDATE requests SET status = 'expired' "
                    "WHERE batch_seq = ? AND status = 'pending'",
                    (batch.seq,),
                )
                meta = orjson.dumps({**batch.info, "expired_count": cur.rowcount}).decode()
                conn.execute(
                    "UPDATE batches SET status = 'expired', ended_at = ?, meta = ?, "
                    "cancelled_count = cancelled_count + ? WHERE seq = ?",
                    (now, meta, cur.rowcount, batch.seq),
                )
        return [r[1] for r in due]

    def processing_batches(self) -> list[Batch]:
        """Batches being processed, oldest start first."""
        with self._tx() as conn:
            rows = conn.execute(
                f"SELECT {_BATCH_COLUMNS} FROM batches WHERE status = 'processing' "
                "ORDER BY started_at, seq"
            ).fetchall()
        return [Batch(*r) for r in rows]

    def take_pending(
        self, batch: Batch, limit: int, after_n: int = 0
    ) -> list[tuple[int, str, bytes]]:
        """Up to ``limit`` pending requests of a batch past row ``after_n``, in order."""
        with self._tx() as conn:
            return conn.execute(
                "SELECT n, custom_id, body FROM requests WHERE batch_seq = ? AND status = 'pending'"
                " AND n > ? ORDER BY n LIMIT ?",
                (batch.seq, after_n, limit),
            ).fetchall()

    def record(self, batch_seq: int, outcomes: Sequence[Outcome]) -> None:
        """Write the results of a chunk and the batch's counts in one transaction."""
        updates = []
        done = failed = prompt = completion = 0
        with self._tx() as conn:
            for o in outcomes:
                self._result_seq += 1
                if o.error is None:
                    status = "completed"
                    result = o.encoded or encode_result(
                        o.n, o.custom_id, status, "response", o.response
                    )
                    done += 1
                else:
                    status = "failed"
                    result = o.encoded or encode_result(o.n, o.custom_id, status, "error", o.error)
                    failed += 1
                prompt += o.prompt_tokens
                completion += o.completion_tokens
                updates.append((status, self._result_seq, result, o.n))
            state = conn.execute("SELECT status FROM batches WHERE seq = ?", (batch_seq,))
            if state.fetchone()[0] in TERMINAL:
                # cancelled while these were in flight: keep only rows still pending
                still = self._still_pending(conn, [u[3] for u in updates])
                kept = [(u, o) for u, o in zip(updates, outcomes, strict=True) if u[3] in still]
                updates = [u for u, _ in kept]
                done = sum(1 for _, o in kept if o.error is None)
                failed = len(kept) - done
                prompt = sum(o.prompt_tokens for _, o in kept)
                completion = sum(o.completion_tokens for _, o in kept)
            cur = conn.executemany(
                "UPDATE requests SET status = ?, result_seq = ?, result = ? "
                "WHERE n = ? AND status = 'pending'",
                updates,
            )
            if cur.rowcount != len(updates):  # pragma: no cover - a second writer on the file
                raise RuntimeError(
                    "requests changed under the worker; is another server on this db?"
                )
            conn.execute(
                "UPDATE batches SET completed_count = completed_count + ?, "
                "failed_count = failed_count + ?, prompt_tokens = prompt_tokens + ?, "
                "completion_tokens = completion_tokens + ? WHERE seq = ?",
                (done, failed, prompt, completion, batch_seq),
            )

    @staticmethod
    def _still_pending(conn: sqlite3.Connection, ns: list[int]) -> set[int]:
        found: set[int] = set()
        for i in range(0, len(ns), 900):
            chunk = ns[i : i + 900]
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"SELECT n FROM requests WHERE status = 'pending' AND n IN ({marks})", chunk
            )
            found.update(r[0] for r in rows)
        return found

    def finish(self, batch_seq: int, error: dict[str, str] | None = None) -> None:
        """End a processing batch: ``completed``, or ``failed`` with ``error``.

        A failing batch's requests that are still pending fail with the batch's
        error, so that every request has a result.
        """
        now = self._clock()
        with self._tx() as conn:
            if error is None:
                conn.execute(  # not when requests were added meanwhile (xAI): they are pending
                    "UPDATE batches SET status = 'completed', ended_at = ? "
                    "WHERE seq = ? AND status = 'processing' "
                    "AND completed_count + failed_count + cancelled_count >= request_count",
                    (now, batch_seq),
                )
                return
            status = conn.execute("SELECT status FROM batches WHERE seq = ?", (batch_seq,))
            if status.fetchone()[0] != "processing":
                return  # cancelled meanwhile: the cancel ends it
            pending = conn.execute(
                "SELECT n, custom_id FROM requests WHERE batch_seq = ? AND status = 'pending' "
                "ORDER BY n",
                (batch_seq,),
            ).fetchall()
            self.record(batch_seq, [Outcome(n, cid, error=error) for n, cid in pending])
            conn.execute(
                "UPDATE batches SET status = 'failed', ended_at = ?, error = ? "
                "WHERE seq = ? AND status = 'processing'",
                (now, orjson.dumps(error).decode(), batch_seq),
            )
