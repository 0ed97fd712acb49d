"""What a job sends for one model: its plan, and the batches a run of it makes.

``plan_requests`` learns every row's request id (``build.request_id``, by rendering the
row, or from the previous output) and keeps one row per distinct request; the requests
themselves are rendered again a shard at a time when they are sent (``Rows``).
``plan_batches`` names and splits them as a run's shards do, for ``tablebatch plan``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tablebatch.io import release_memory
from tablebatch.jobs.build import Renderer, custom_ids_for, render_shard, shard_rows
from tablebatch.jobs.identity import PriorOutput
from tablebatch.jobs.naming import batch_name, content_digest, piece_name
from tablebatch.jobs.requests import Requests, Sendable
from tablebatch.jobs.schema import JobConfig
from tablebatch.jobs.take import single, take
from tablebatch.jobs.text import as_text, blank


class Rows:
    """Rows still to send: their custom_ids and where they are in the table of the columns
    their prompts need, rendered into requests a shard at a time, so that a million encoded
    requests never sit in memory together. Slicing, selecting and ordering move indices
    only: the table's text is copied a shard at a time, when the shard is rendered."""

    def __init__(
        self, table: pa.Table, custom_ids: pa.Array, renderer: Renderer, rows: pa.Array
    ) -> None:
        self.table = table  # shared by every slice and selection, never copied
        self.ids = custom_ids
        self.renderer = renderer
        self.rows = rows  # the table's row of each custom_id

    def _with(self, ids: pa.Array, rows: pa.Array) -> Rows:
        return Rows(self.table, ids, self.renderer, rows)

    def __len__(self) -> int:
        return len(self.ids)

    def slice(self, start: int, length: int) -> Rows:
        """``length`` rows from ``start`` (no copy)."""
        return self._with(self.ids.slice(start, length), self.rows.slice(start, length))

    def select(self, custom_ids: pa.Array | pa.ChunkedArray | list[str]) -> Rows:
        """The rows of these custom_ids, still in input order."""
        mask = pc.is_in(self.ids, value_set=pa.array(custom_ids, pa.string()))
        return self._with(self.ids.filter(mask), self.rows.filter(mask))

    def by_id(self) -> Rows:
        """The rows in the order of their custom_ids (see ``Requests.by_id``)."""
        order = pc.sort_indices(self.ids)
        return self._with(self.ids.take(order), self.rows.take(order))

    def render(self) -> tuple[Requests, dict[str, str]]:
        """The requests of these rows, and the rows left out and why."""
        return self.renderer.render(take(self.table, self.rows), self.ids.to_pylist())


def _empty_prompts(table: pa.Table, columns: list[str]) -> pa.Array:
    """Which rows have nothing in any of the template's columns (a mask)."""
    empty: Any = None
    for column in columns:
        none = blank(as_text(table[column]))
        empty = none if empty is None else pc.and_(empty, none)
    if empty is None:
        return pa.array([False] * table.num_rows)
    return single(empty)


@dataclass(frozen=True)
class Numbered:
    """Each row's request by number: ``ids`` the distinct request ids (the plan's rows'),
    ``codes`` each row's index among them, -1 for a row left out (known by its row id).
    Planning numbers them anyway; the join reuses it rather than hash a million ids again."""

    ids: pa.Array
    codes: np.ndarray


@dataclass
class Plan:
    """What a job sends for one model: every row's custom_id in input order (rows that send
    the same request share its id), one row per distinct request to send (rendered shard by
    shard when sent), and the rows left out, with why."""

    model: str
    custom_ids: pa.Array  # every row's: its request's id, or (left out) its row's
    rows: Rows  # one row per distinct request: what is sent
    skipped: dict[str, str] = field(default_factory=dict)  # custom_id -> why
    known: int = 0  # rows whose request id the previous output told (not rendered to learn it)
    numbered: Numbered | None = None  # each row's request numbered, as planning found them

    @cached_property
    def items(self) -> Requests:
        """Every request, rendered now (for ``tablebatch plan`` and tests; a run renders
        shard by shard). Rows over the size limit are added to ``skipped``."""
        parts: list[Requests] = []
        for start in range(0, len(self.rows), BUILD_CHUNK):
            requests, skipped = self.rows.slice(start, BUILD_CHUNK).render()
            parts.append(requests)
            self.skipped.update(skipped)
        if not parts:
            return Requests(pa.array([], pa.string()), pa.array([], pa.binary()))
        return Requests(
            pa.chunked_array([c for p in parts for c in p.ids.chunks], pa.string()),
            pa.chunked_array([c for p in parts for c in p.items.chunks], pa.binary()),
        )

    @property
    def request_bytes(self) -> int:
        """Bytes of all encoded requests."""
        return self.items.nbytes


BUILD_CHUNK = 50_000  # rows rendered at a time by ``Plan.items``


def plan_requests(
    table: pa.Table,
    config: JobConfig,
    ids: pa.Array,
    model: str,
    *,
    by_content: bool = True,
    prior: PriorOutput | None = None,
) -> Plan:
    """What to send to ``model``: a request per distinct request, except rows whose prompt
    is empty or whose request is too large (``skipped``, by their row's id).

    Every row's request is rendered to learn its id (``request_id``: a digest of what it
    sends), then dropped: rows that send the same request share one, and a run renders a
    shard's requests again when it sends them. With ``prior`` (the previous output), a row
    whose texts it holds unchanged keeps the id it had there, unrendered. ``by_content=False``
    skips all that (rows keep their row ids), for checks that only need to know whether
    anything can be sent."""
    renderer = Renderer(config, model)
    row_ids = custom_ids_for(ids)
    fields = [f for f in renderer.template.fields if f not in renderer.filled]
    empty = _empty_prompts(table, fields)
    skipped: dict[str, str] = {}
    columns = table.select(renderer.columns)
    if pc.any(empty).as_py():
        reason = (
            f"the prompt is empty: {', '.join(fields)} "
            f"{'is' if len(fields) == 1 else 'are'} empty in this row"
        )
        skipped = dict.fromkeys(row_ids.filter(empty).to_pylist(), reason)
    keep = pc.indices_nonzero(pc.invert(empty))
    if not by_content:
        return Plan(model, row_ids, Rows(columns, row_ids.take(keep), renderer, keep), skipped)
    known = prior.request_ids(table, ids, renderer, config) if prior is not None else None
    per_kept = _identify(renderer, columns, row_ids, keep, known, skipped)
    sent = pc.is_valid(per_kept)
    rendered = pc.replace_with_mask(pc.invert(empty), pc.invert(empty), sent)  # rows with an id
    custom_ids = pc.replace_with_mask(row_ids, rendered, per_kept.filter(sent))
    ids, carriers, codes = _first_rows(per_kept.filter(sent), keep.filter(sent))
    rows = Rows(columns, ids, renderer, carriers)
    numbered = np.full(len(row_ids), -1, dtype=np.int32)
    numbered[np.flatnonzero(rendered.to_numpy(zero_copy_only=False))] = codes
    reused = 0 if known is None else len(known) - known.null_count
    release_memory()  # the renders and the numbering
    return Plan(model, custom_ids, rows, skipped, reused, Numbered(ids, numbered))


def _first_rows(request_ids: pa.Array, rows: pa.Array) -> tuple[pa.Array, pa.Array, np.ndarray]:
    """Each distinct request id and its first row (the row that carries it), in table order
    (``rows`` ascending), and each row's number among them. ``dictionary_encode`` numbers
    the ids in order of first appearance, so the first row of each number is a NumPy
    ``unique``: at a million rows this held 160 MB less RSS than an Arrow group_by and
    sort, which kept it to the end of the run."""
    encoded = pc.dictionary_encode(request_ids)
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    _, first = np.unique(codes, return_index=True)  # by number: in order of appearance
    return encoded.dictionary, rows.take(pa.array(first)), codes


def _identify(
    renderer: Renderer,
    columns: pa.Table,
    row_ids: pa.Array,
    keep: pa.Array,
    known: pa.Array | None,
    skipped: dict[str, str],
) -> pa.Array:
    """The request id of each row of ``keep`` (null: left out, why added to ``skipped``):
    ``known``'s where it has one, else rendered, a chunk of rows at a time, into Arrow (no
    Python object per row outlives its chunk)."""
    have = None if known is None else known.take(keep)
    todo = keep if have is None else keep.filter(pc.is_null(have))
    found: list[pa.Array] = []
    for start in range(0, len(todo), BUILD_CHUNK):
        rows = todo.slice(start, BUILD_CHUNK)
        requests, reasons = renderer.identify(take(columns, rows))
        chunk = pa.array(requests, pa.string())
        if chunk.null_count:
            left_out = row_ids.take(rows.filter(pc.is_null(chunk))).to_pylist()
            why = [
                r or "the request cannot be rendered"
                for r, q in zip(reasons, requests, strict=True)
                if q is None
            ]
            skipped |= dict(zip(left_out, why, strict=True))
        found.append(chunk)
    rendered = pa.concat_arrays(found) if found else pa.array([], pa.string())
    if have is None or len(rendered) == 0:
        return rendered if have is None else have
    return pc.replace_with_mask(have, pc.is_null(have), rendered)


def build_requests(table: pa.Table, config: JobConfig, ids: pa.Array, model: str) -> Plan:
    """``plan_requests``, with every request rendered (``plan.items``) and every skipped
    row known: for ``tablebatch plan`` and for tests."""
    plan = plan_requests(table, config, ids, model)
    _ = plan.items
    return plan


@dataclass
class PlannedBatch:
    """A batch a run would send: its name and its requests."""

    name: str
    requests: Requests


def plan_batches(
    plan: Plan, config: JobConfig, attempt: int = 1, rows: Sendable | None = None
) -> Iterator[PlannedBatch]:
    """The batches a run sends in an attempt for ``rows`` (default: all of ``plan``'s),
    shard by shard, rendered and split as the run's shards do; rows left out on the way
    are added to ``plan.skipped``."""
    fingerprint = config.fingerprint(plan.model)
    for _, shard in shard_rows(plan.rows if rows is None else rows, config):
        pieces, skipped = render_shard(shard, config)
        plan.skipped.update(skipped)
        content = content_digest(shard.ids.to_pylist())
        name = batch_name(config, "answer", fingerprint, attempt, content)
        for piece, requests in enumerate(pieces):
            yield PlannedBatch(piece_name(name, piece), requests)
