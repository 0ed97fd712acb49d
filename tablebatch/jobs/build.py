"""From a table to batch requests: check the table, render one request per row, shard.

Everything that can be wrong with the data is found here, before anything is
sent. Each row's ``custom_id`` is derived from its id (never its position), so
a re-run, on any machine, names the same rows the same way.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import re
import string
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from tablebatch.jobs.config import JobConfig, template_fields
from tablebatch.jobs.errors import DataError

_READABLE_ID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


def custom_id_for(row_id: str) -> str:
    """The stable custom_id of a row: readable for simple ids, a hash otherwise.

    Both forms fit every provider's rules (``^[A-Za-z0-9_-]{1,64}$``).
    """
    if _READABLE_ID.match(row_id):
        return f"id-{row_id}"
    return "h-" + hashlib.blake2b(row_id.encode(), digest_size=16).hexdigest()


class Template:
    """A prompt template compiled once: literal parts and column names."""

    def __init__(self, text: str) -> None:
        self.fields = template_fields(text)
        self.parts: list[tuple[str, str | None]] = [
            (literal, name) for literal, name, _, _ in string.Formatter().parse(text)
        ]

    def render(self, values: dict[str, str]) -> str:
        """The text with each ``{column}`` replaced by the row's value."""
        out: list[str] = []
        for literal, name in self.parts:
            out.append(literal)
            if name is not None:
                out.append(values[name])
        return "".join(out)


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def column_texts(table: pa.Table, column: str) -> list[str]:
    """A column as text, nulls as empty strings."""
    return [_text(v) for v in table.column(column).to_pylist()]


def _missing_column(source: str, column: str, key: str, names: list[str]) -> DataError:
    close = difflib.get_close_matches(column, names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return DataError(
        f"{source}: {key} names column {column!r}, which the table does not have.{hint} "
        f"Columns: {', '.join(names)}."
    )


def check_table(table: pa.Table, config: JobConfig, source: str) -> list[str]:
    """Check the table against the config; returns the row ids as text, in order."""
    names = table.column_names
    if table.num_rows == 0:
        raise DataError(f"{source}: the table has no rows; nothing to send.")
    id_column = config.input.id_column
    if id_column not in names:
        raise _missing_column(source, id_column, "input.id_column", names)
    wanted = [("prompt.template", f) for f in template_fields(config.prompt.template)]
    if config.prompt.system:
        wanted += [("prompt.system", f) for f in template_fields(config.prompt.system)]
    wanted += [
        (k, c)
        for k, c in (
            ("gold_column", config.gold_column),
            ("reference_column", config.reference_column),
        )
        if c
    ]
    if config.judge is not None:
        extra = set(template_fields(config.judge.template)) - {"prompt", "answer", "reference"}
        wanted += [("judge.template", c) for c in sorted(extra)]
    for key, column in wanted:
        if column not in names:
            raise _missing_column(source, column, key, names)
    raw = table.column(id_column).to_pylist()
    nulls = [i for i, v in enumerate(raw) if _text(v).strip() == ""]
    if nulls:
        rows = ", ".join(str(i + 1) for i in nulls[:10]) + (" …" if len(nulls) > 10 else "")
        raise DataError(
            f"{source}: id column {id_column!r} is empty in {len(nulls)} row(s) (data rows "
            f"{rows}); every row needs a unique id."
        )
    ids = [_text(v) for v in raw]
    repeated = [(i, n) for i, n in Counter(ids).items() if n > 1]
    if repeated:
        shown = ", ".join(f"{i!r} ({n}x)" for i, n in repeated[:10])
        raise DataError(
            f"{source}: id column {id_column!r} repeats {len(repeated)} id(s): {shown}. Ids "
            "must be unique: answers are joined back by them."
        )
    return ids


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
        return Requests(self.ids.slice(start, stop - start), self.items.slice(start, stop - start))


@dataclass
class Plan:
    """The requests of a job for one model, in input order, and the rows left out."""

    model: str
    custom_ids: list[str]
    items: Requests
    skipped: dict[str, str] = field(default_factory=dict)  # custom_id -> why
    prompts: dict[str, str] = field(default_factory=dict)  # custom_id -> the user message

    @property
    def request_bytes(self) -> int:
        """Bytes of all encoded requests."""
        return self.items.nbytes


BUILD_CHUNK = 50_000  # rows rendered at a time: bounds the Python objects alive at once


def build_requests(
    table: pa.Table, config: JobConfig, ids: list[str], model: str, keep_prompts: bool = False
) -> Plan:
    """One chat request per row for ``model``; empty or oversized requests are skipped."""
    template = Template(config.prompt.template)
    system = Template(config.prompt.system) if config.prompt.system else None
    columns = list(dict.fromkeys(template.fields + (system.fields if system else [])))
    limit = config.batch.max_request_bytes
    custom_ids = [custom_id_for(i) for i in ids]
    skipped: dict[str, str] = {}
    prompts: dict[str, str] = {}
    id_chunks: list[pa.Array] = []
    item_chunks: list[pa.Array] = []
    params = orjson.dumps(config.params)[1:-1]
    for start in range(0, table.num_rows, BUILD_CHUNK):
        part = table.slice(start, BUILD_CHUNK)
        values = {c: column_texts(part, c) for c in columns}
        sent_ids: list[str] = []
        sent: list[bytes] = []
        for offset in range(part.num_rows):
            custom_id = custom_ids[start + offset]
            row = {c: values[c][offset] for c in columns}
            user = template.render(row)
            if keep_prompts:
                prompts[custom_id] = user
            if template.fields and all(not row[c].strip() for c in template.fields):
                skipped[custom_id] = (
                    f"the prompt is empty: {', '.join(template.fields)} "
                    f"{'is' if len(template.fields) == 1 else 'are'} empty in this row"
                )
                continue
            messages = [{"role": "user", "content": user}]
            if system is not None:
                messages.insert(0, {"role": "system", "content": system.render(row)})
            item = orjson.dumps(
                {"custom_id": custom_id, "body": {"model": model, "messages": messages}}
            )
            if params:  # the body's other parameters, spliced in without a second encoding
                item = item[:-2] + b"," + params + b"}}"
            if len(item) > limit:
                skipped[custom_id] = (
                    f"the request has {len(item)} bytes, over batch.max_request_bytes "
                    f"({limit}); shorten the row's text or raise the limit"
                )
                continue
            sent_ids.append(custom_id)
            sent.append(item)
        id_chunks.append(pa.array(sent_ids, pa.string()))
        item_chunks.append(pa.array(sent, pa.binary()))
    items = Requests(
        pa.chunked_array(id_chunks, pa.string()), pa.chunked_array(item_chunks, pa.binary())
    )
    return Plan(model, custom_ids, items, skipped, prompts)


def shard(items: Requests, config: JobConfig) -> list[Requests]:
    """Split requests into batches by count and by bytes (``batch.max_requests/max_bytes``)."""
    return items.shards(config.batch.max_requests, config.batch.max_bytes)


def estimate_tokens(items: Requests) -> int:
    """Prompt tokens, roughly: a token per four characters of the messages."""
    total = 0
    for _, item in items:
        for message in orjson.loads(item)["body"]["messages"]:
            total += (len(message.get("content") or "") + 3) // 4 + 4
        total += 3
    return total
