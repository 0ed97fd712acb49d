"""Results and cursors: writing a chunk's results, and paging requests and results.

Results are stored as the exact JSON they are served as, so paging them is a
concatenation, not a re-encoding. Requests page in the order they were added;
results in the order they were written (new results land after the walk's
position), so a walk sees every item once. A cursor is the id of the last item
of the previous page; one that names no item of the batch is a 400.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence

import orjson

from tablebatch.server.errors import InvalidRequest
from tablebatch.server.store.base import StoreBase
from tablebatch.server.store.records import (
    TERMINAL,
    Outcome,
    StoredBatch,
    encode_result,
    request_id,
    request_n,
)


class ResultSection(StoreBase):
    """A batch's requests and results: recorded by the worker, paged by the routes."""

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
    def _cursor_row(conn: sqlite3.Connection, batch: StoredBatch, after: str, column: str) -> int:
        n = request_n(after)
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
