"""Files a dialect keeps: OpenAI's uploads, and the output files of a finished batch."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

from tablebatch.server.errors import NotFound
from tablebatch.server.store.batches import BatchSection
from tablebatch.server.store.records import TERMINAL, StoredBatch, StoredFile


class FileSection(BatchSection):
    """Files, and the outputs a batch names in its meta once it has ended."""

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
        render: Callable[[StoredBatch, Iterator[list[tuple[int, str, str, bytes | None]]]], dict],
    ) -> StoredBatch:
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
