"""The worker's side of the store: the batches to work on, the requests to take, and
the ends of batches (completed, failed, cancelled, expired)."""

from __future__ import annotations

import orjson

from tablebatch.server.store.records import Outcome, StoredBatch
from tablebatch.server.store.results import ResultSection
from tablebatch.server.store.schema import BATCH_COLUMNS


class ProcessingSection(ResultSection):
    """What the worker reads and writes as it processes batches."""

    def cancelling_batches(self) -> list[StoredBatch]:
        """Batches waiting for the worker to finish their cancellation."""
        with self._tx() as conn:
            rows = conn.execute(
                f"SELECT {BATCH_COLUMNS} FROM batches WHERE status = 'cancelling' ORDER BY seq"
            ).fetchall()
        return [StoredBatch(*r) for r in rows]

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
                f"SELECT {BATCH_COLUMNS} FROM batches WHERE status IN "
                "('created', 'pending', 'processing', 'cancelling') AND meta IS NOT NULL "
                "AND json_extract(meta, '$.expires_at') <= ?",
                (now,),
            ).fetchall()
            for batch in (StoredBatch(*r) for r in due):
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

    def processing_batches(self) -> list[StoredBatch]:
        """Batches being processed, oldest start first."""
        with self._tx() as conn:
            rows = conn.execute(
                f"SELECT {BATCH_COLUMNS} FROM batches WHERE status = 'processing' "
                "ORDER BY started_at, seq"
            ).fetchall()
        return [StoredBatch(*r) for r in rows]

    def take_pending(
        self, batch: StoredBatch, limit: int, after_n: int = 0
    ) -> list[tuple[int, str, bytes]]:
        """Up to ``limit`` pending requests of a batch past row ``after_n``, in order."""
        with self._tx() as conn:
            return conn.execute(
                "SELECT n, custom_id, body FROM requests WHERE batch_seq = ? AND status = 'pending'"
                " AND n > ? ORDER BY n LIMIT ?",
                (batch.seq, after_n, limit),
            ).fetchall()

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
