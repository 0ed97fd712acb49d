"""From a table to batch requests: check the table, render one request per row, shard.

Everything that can be wrong with the data is found here, before anything is
sent. Each row's ``custom_id`` is derived from its id (never its position), so
a re-run, on any machine, names the same rows the same way.
Which rows send which request, and the batches they make, is ``plan.py``'s.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import string
from collections.abc import Iterator
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from tablebatch.api import Limits
from tablebatch.jobs.errors import DataError
from tablebatch.jobs.requests import Requests, Sendable
from tablebatch.jobs.schema import JobConfig, template_fields
from tablebatch.jobs.text import blank, id_texts, text_values

_READABLE_ID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


REQUEST_ID_PREFIX = "k-"


def request_id(body: bytes) -> str:
    """The custom_id of a request: a digest of what it sends (model, messages, params), so
    that the same request has the same id in every run, whatever row carries it."""
    return REQUEST_ID_PREFIX + hashlib.blake2b(body, digest_size=8).hexdigest()


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


def _missing_column(source: str, column: str, key: str, names: list[str]) -> DataError:
    close = difflib.get_close_matches(column, names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return DataError(
        f"{source}: {key} names column {column!r}, which the table does not have.{hint} "
        f"Columns: {', '.join(names)}."
    )


def check_table(table: pa.Table, config: JobConfig, source: str) -> pa.Array:
    """Check the table against the config; returns the row ids as text, in order (an Arrow
    array: a million ids as Python strings would cost more than the check)."""
    names = table.column_names
    if table.num_rows == 0:
        raise DataError(f"{source}: the table has no rows; nothing to send.")
    id_column = config.input.id_column
    if id_column not in names:
        raise _missing_column(source, id_column, "input.id_column", names)
    for key, column in config.input_keys():
        if column not in names:
            raise _missing_column(source, column, key, names)
    ids = id_texts(table.column(id_column))
    empty = pc.indices_nonzero(blank(ids)).to_pylist()
    if empty:
        rows = ", ".join(str(i + 1) for i in empty[:10]) + (" …" if len(empty) > 10 else "")
        raise DataError(
            f"{source}: id column {id_column!r} is empty in {len(empty)} row(s) (data rows "
            f"{rows}); every row needs a unique id."
        )
    counts = pc.value_counts(ids)
    repeated = counts.filter(pc.greater(counts.field("counts"), 1)).to_pylist()
    if repeated:
        shown = ", ".join(f"{r['values']!r} ({r['counts']}x)" for r in repeated[:10])
        raise DataError(
            f"{source}: id column {id_column!r} repeats {len(repeated)} id(s): {shown}. Ids "
            "must be unique: answers are joined back by them."
        )
    return ids


def custom_ids_for(ids: pa.Array) -> pa.Array:
    """``custom_id_for`` of every id, in Arrow: only ids that need a hash go through Python."""
    readable = pc.match_substring_regex(ids, _READABLE_ID.pattern)
    out = pc.binary_join_element_wise("id-", ids, "")
    if pc.all(readable).as_py() in (True, None):
        return out
    odd = pc.indices_nonzero(pc.invert(readable))
    hashed = pa.array([custom_id_for(v) for v in ids.take(odd).to_pylist()], pa.string())
    mask = pc.invert(readable)
    return pc.replace_with_mask(out, mask, hashed)


class Renderer:
    """Turns rows into encoded chat requests for one model: the templates compiled once."""

    def __init__(self, config: JobConfig, model: str) -> None:
        kind = config.kind_impl
        self.model = model
        self.template = Template(config.prompt.template)
        self.system = Template(config.prompt.system) if config.prompt.system else None
        self.filled = kind.placeholders()  # placeholders the kind fills, the same in every row
        fields = self.template.fields + (self.system.fields if self.system else [])
        self.columns = [f for f in dict.fromkeys(fields) if f not in self.filled]
        self.examples = kind.example_messages()
        self.limit = config.batch.max_request_bytes
        self.params = orjson.dumps({**config.params, **kind.body()})[1:-1]
        self.breakpoint = _cache_breakpoint(config, self)  # prompt.cache: where (Anthropic)

    def bodies(self, table: pa.Table) -> Iterator[bytes]:
        """The encoded chat body of every row of ``table`` (model, messages, params)."""
        values = {c: text_values(table.column(c)) for c in self.columns}
        template, system, params = self.template, self.system, self.params
        for offset in range(table.num_rows):
            row = {c: values[c][offset] for c in self.columns} | self.filled
            messages = [*self.examples, {"role": "user", "content": template.render(row)}]
            if system is not None:
                messages.insert(0, {"role": "system", "content": system.render(row)})
            if self.breakpoint is not None:
                messages = _cached(messages, self.breakpoint)
            body = orjson.dumps({"model": self.model, "messages": messages})
            if params:  # the body's other parameters, spliced in without a second encoding
                body = body[:-1] + b"," + params + b"}"
            yield body

    def _too_large(self, size: int) -> str | None:
        if size <= self.limit:
            return None
        return (
            f"the request has {size} bytes, over batch.max_request_bytes ({self.limit}); "
            "shorten the row's text or raise the limit"
        )

    def render(self, table: pa.Table, custom_ids: list[str]) -> tuple[Requests, dict[str, str]]:
        """The requests of these rows, and the rows left out (custom_id -> why): a request
        over ``batch.max_request_bytes`` is not sent."""
        skipped: dict[str, str] = {}
        sent_ids: list[str] = []
        sent: list[bytes] = []
        for custom_id, body in zip(custom_ids, self.bodies(table), strict=True):
            item = b'{"custom_id":' + orjson.dumps(custom_id) + b',"body":' + body + b"}"
            why = self._too_large(len(item))
            if why is not None:
                skipped[custom_id] = why
                continue
            sent_ids.append(custom_id)
            sent.append(item)
        return Requests(pa.array(sent_ids, pa.string()), pa.array(sent, pa.binary())), skipped

    def identify(self, table: pa.Table) -> tuple[list[str | None], list[str | None]]:
        """Each row's request id (``request_id`` of what it sends), or why it is left out."""
        ids: list[str | None] = []
        reasons: list[str | None] = []
        wrapper = len(b'{"custom_id":"","body":}') + len(REQUEST_ID_PREFIX) + 16
        for body in self.bodies(table):
            why = self._too_large(len(body) + wrapper)
            ids.append(None if why else request_id(body))
            reasons.append(why)
        return ids, reasons

    def prompts(self, table: pa.Table) -> list[str]:
        """The user message of every row of ``table``."""
        columns = [c for c in self.template.fields if c not in self.filled]
        values = {c: text_values(table.column(c)) for c in columns}
        return [
            self.template.render({c: values[c][i] for c in columns} | self.filled)
            for i in range(table.num_rows)
        ]


CACHE_CONTROL = {"type": "ephemeral", "ttl": "1h"}  # a batch outlasts the 5-minute default


def _cache_breakpoint(config: JobConfig, renderer: Renderer) -> int | None:
    """With ``prompt.cache`` for Anthropic, the index of the last message of the static
    prefix (the system prompt when no row changes it, then the examples): the request marks
    it with ``cache_control``. None: nothing to mark (no cache asked, another provider,
    whose caches need no mark, or a system prompt that differs by row)."""
    api = config.api
    if not config.prompt.cache or api is None or api.provider != "anthropic":
        return None
    system = renderer.system
    if system is not None and any(f not in renderer.filled for f in system.fields):
        return None  # the first message differs by row: no prefix is shared
    last = len(renderer.examples) - (0 if system is not None else 1)
    return last if last >= 0 else None


def _cached(messages: list[dict[str, Any]], index: int) -> list[dict[str, Any]]:
    """The messages with message ``index``'s text as a part marked for the prompt cache."""
    marked = dict(messages[index])
    marked["content"] = [
        {"type": "text", "text": marked["content"], "cache_control": CACHE_CONTROL}
    ]
    return [*messages[:index], marked, *messages[index + 1 :]]


def within_limits(config: JobConfig, limits: Limits) -> JobConfig:
    """The config with ``batch.max_requests``/``max_bytes`` lowered to what one batch may
    hold at the provider (its dialect's ``limits``), so that every shard fits."""
    count, size = config.batch.max_requests, config.batch.max_bytes
    count = min(count, limits.max_requests or count)
    size = min(size, limits.max_bytes or size)
    if (count, size) == (config.batch.max_requests, config.batch.max_bytes):
        return config
    batch = config.batch.model_copy(update={"max_requests": count, "max_bytes": size})
    return config.model_copy(update={"batch": batch})


def render_shard(rows: Sendable, config: JobConfig) -> tuple[list[Requests], dict[str, str]]:
    """A shard's requests rendered, and split by bytes into the batches that carry it (one,
    unless ``batch.max_bytes`` needs more); and the rows left out, with why. What a run
    sends for a shard and what ``tablebatch plan`` shows are this, the same way."""
    requests, skipped = rows.render()
    return requests.shards(config.batch.max_requests, config.batch.max_bytes), skipped


def shard_rows(rows: Sendable, config: JobConfig) -> Iterator[tuple[int, Sendable]]:
    """The shards of ``rows``: runs of ``batch.max_requests`` in the order of their ids (so
    that the same requests make the same batches), numbered from 0."""
    size = config.batch.max_requests
    ordered = rows.by_id()
    for index, start in enumerate(range(0, len(ordered), size)):
        yield index, ordered.slice(start, size)


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
