"""Requests as a run holds them: encoded in Arrow arrays, not a million Python objects,
and what any set of rows still to send can do (``Sendable``: slice, select, order by id,
render)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc


class Requests:
    """Encoded requests in input order, stored compactly: custom_ids and their JSON in Arrow
    arrays rather than a million Python objects. Iterating yields ``(custom_id, bytes)``."""

    def __init__(self, ids: pa.Array | pa.ChunkedArray, items: pa.Array | pa.ChunkedArray) -> None:
        self.ids = ids if isinstance(ids, pa.ChunkedArray) else pa.chunked_array([ids])
        self.items = items if isinstance(items, pa.ChunkedArray) else pa.chunked_array([items])

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, bytes]]) -> Requests:
        """Requests from ``(custom_id, encoded request)`` pairs."""
        return cls(
            pa.array([c for c, _ in pairs], pa.string()),
            pa.array([i for _, i in pairs], pa.binary()),
        )

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        for ids, items in zip(self.ids.chunks, self.items.chunks, strict=True):
            yield from zip(ids.to_pylist(), items.to_pylist(), strict=True)

    def __getitem__(self, index: int) -> tuple[str, bytes]:
        return self.ids[index].as_py(), self.items[index].as_py()

    @property
    def nbytes(self) -> int:
        """Bytes of all encoded requests."""
        return int(pc.sum(pc.binary_length(self.items)).as_py() or 0)

    def select(self, custom_ids: pa.Array | pa.ChunkedArray | list[str]) -> Requests:
        """The requests of these custom_ids, still in input order."""
        mask = pc.is_in(self.ids, value_set=pa.array(custom_ids, pa.string()))
        return Requests(self.ids.filter(mask), self.items.filter(mask))

    def by_id(self) -> Requests:
        """The requests in the order of their ids (so that batches of the same requests are
        the same batches, whatever the table's order)."""
        order = pc.sort_indices(self.ids)
        return Requests(self.ids.take(order), self.items.take(order))

    def shards(self, max_count: int, max_bytes: int) -> list[Requests]:
        """Runs of at most ``max_count`` requests and ``max_bytes`` bytes (the call's JSON)."""
        if not len(self):
            return []
        sizes = pc.binary_length(self.items).to_numpy(zero_copy_only=False).astype("int64") + 1
        if int(sizes.max()) + 16 > max_bytes:
            index = int(sizes.argmax())
            raise ValueError(
                f"request {self.ids[index].as_py()!r} has {int(sizes[index]) - 1} bytes, more "
                f"than a batch may hold ({max_bytes}); shorten its prompt or raise max_bytes."
            )
        out, start, total = [], 0, 16
        for i, size in enumerate(sizes.tolist()):
            if i > start and (i - start >= max_count or total + size > max_bytes):
                out.append(self._slice(start, i))
                start, total = i, 16
            total += size
        out.append(self._slice(start, len(sizes)))
        return out

    def _slice(self, start: int, stop: int) -> Requests:
        return self.slice(start, stop - start)

    def slice(self, start: int, length: int) -> Requests:
        """``length`` requests from ``start`` (no copy)."""
        return Requests(self.ids.slice(start, length), self.items.slice(start, length))

    def render(self) -> tuple[Requests, dict[str, str]]:
        """Already rendered: the requests themselves, none left out (as ``Rows.render``)."""
        return self, {}


class Sendable(Protocol):
    """Rows to send: rendered into requests when their shard is sent (``Rows``), or
    already rendered (``Requests``)."""

    ids: pa.Array | pa.ChunkedArray

    def __len__(self) -> int: ...

    def slice(self, start: int, length: int) -> Sendable: ...

    def select(self, custom_ids: pa.Array | pa.ChunkedArray | list[str]) -> Sendable: ...

    def by_id(self) -> Sendable: ...

    def render(self) -> tuple[Requests, dict[str, str]]: ...
