"""Idempotency records: the first answer to each ``Idempotency-Key``, kept with its effect."""

from __future__ import annotations

from collections.abc import Callable

from tablebatch.server.errors import Conflict
from tablebatch.server.store.base import StoreBase


class IdempotencySection(StoreBase):
    """Run an effect once per key, in the transaction that records its answer."""

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
