"""Batches and their requests: create, list, add requests (all or none), start,
cancel, and fail a batch whose input was refused.

Batches are listed newest first: a cursor ``after`` is the id of the last batch
of the previous page, and new batches land before the walk, so a walk sees
every batch once.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from tablebatch.server.errors import Conflict, InvalidRequest, PayloadTooLarge
from tablebatch.server.store.records import TERMINAL, Outcome, StoredBatch
from tablebatch.server.store.results import ResultSection
from tablebatch.server.store.schema import BATCH_COLUMNS


class BatchSection(ResultSection):
    """Batches and the requests added to them (a rejected request's result is recorded
    with it, hence the results section below)."""

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
    ) -> StoredBatch:
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

    def update_meta(self, batch_id: str, dialect: str, **changes: Any) -> StoredBatch:
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
    ) -> tuple[list[StoredBatch], bool]:
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
                f"SELECT {BATCH_COLUMNS} FROM batches WHERE {' AND '.join(clauses)} "
                f"ORDER BY seq {order} LIMIT ?",
                (*params, limit + 1),
            ).fetchall()
        page = [StoredBatch(*r) for r in rows[:limit]]
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
    ) -> StoredBatch:
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

    def start(self, batch_id: str, dialect: str = "seed") -> StoredBatch:
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

    def cancel(self, batch_id: str, dialect: str = "seed") -> StoredBatch:
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

    def reject(self, batch_id: str, dialect: str, error: Any) -> StoredBatch:
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
