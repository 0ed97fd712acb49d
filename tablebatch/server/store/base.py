"""The store's connection, its transactions, and the lookup every section starts from.

One connection behind one lock: SQLite serialises writers anyway, and a single
writer keeps every count exact. Each public call is one transaction; calls made
inside ``transaction()`` (or inside another call) join the outer one.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tablebatch.server.errors import NotFound
from tablebatch.server.settings import ServerLimits
from tablebatch.server.store.records import StoredBatch
from tablebatch.server.store.schema import BATCH_COLUMNS, open_database


class StoreBase:
    """The database, its lock and clock: what every section of ``Store`` works through."""

    def __init__(
        self, path: str, limits: ServerLimits | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.limits = limits or ServerLimits()
        self._clock = clock
        self._lock = threading.RLock()
        self._depth = 0
        self._conn = open_database(path)
        row = self._conn.execute("SELECT MAX(result_seq) FROM requests").fetchone()
        self._result_seq = row[0] or 0

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

    def _batch(self, conn: sqlite3.Connection, batch_id: str, dialect: str = "seed") -> StoredBatch:
        row = conn.execute(f"SELECT {BATCH_COLUMNS} FROM batches WHERE id = ?", (batch_id,))
        found = row.fetchone()
        if found is None or StoredBatch(*found).dialect != dialect:
            raise NotFound(f"No batch with id {batch_id!r}.")
        return StoredBatch(*found)

    def get_batch(self, batch_id: str, dialect: str = "seed") -> StoredBatch:
        """The batch with this id, or NotFound (also when it belongs to another dialect)."""
        with self._tx() as conn:
            return self._batch(conn, batch_id, dialect)
