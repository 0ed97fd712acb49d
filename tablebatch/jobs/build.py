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
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa

from tablebatch.api.client import chunk_requests
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


@dataclass
class Plan:
    """The requests of a job for one model, in input order, and the rows left out."""

    model: str
    custom_ids: list[str]
    items: list[tuple[str, bytes]]  # (custom_id, encoded request) of the rows to send
    skipped: dict[str, str] = field(default_factory=dict)  # custom_id -> why
    prompts: dict[str, str] = field(default_factory=dict)  # custom_id -> the user message

    @property
    def request_bytes(self) -> int:
        """Bytes of all encoded requests."""
        return sum(len(item) for _, item in self.items)


def build_requests(
    table: pa.Table, config: JobConfig, ids: list[str], model: str, keep_prompts: bool = False
) -> Plan:
    """One chat request per row for ``model``; empty or oversized requests are skipped."""
    template = Template(config.prompt.template)
    system = Template(config.prompt.system) if config.prompt.system else None
    columns = list(dict.fromkeys(template.fields + (system.fields if system else [])))
    values = {c: column_texts(table, c) for c in columns}
    limit = config.batch.max_request_bytes
    plan = Plan(model, [custom_id_for(i) for i in ids], [])
    for index, custom_id in enumerate(plan.custom_ids):
        row = {c: values[c][index] for c in columns}
        user = template.render(row)
        if keep_prompts:
            plan.prompts[custom_id] = user
        if all(not row[c].strip() for c in template.fields) and template.fields:
            plan.skipped[custom_id] = (
                f"the prompt is empty: {', '.join(template.fields)} "
                f"{'is' if len(template.fields) == 1 else 'are'} empty in this row"
            )
            continue
        messages = [{"role": "user", "content": user}]
        if system is not None:
            messages.insert(0, {"role": "system", "content": system.render(row)})
        body = {"model": model, "messages": messages, **config.params}
        item = orjson.dumps({"custom_id": custom_id, "body": body})
        if len(item) > limit:
            plan.skipped[custom_id] = (
                f"the request has {len(item)} bytes, over batch.max_request_bytes ({limit}); "
                "shorten the row's text or raise the limit"
            )
            continue
        plan.items.append((custom_id, item))
    return plan


def shard(items: list[tuple[str, bytes]], config: JobConfig) -> list[list[tuple[str, bytes]]]:
    """Split requests into batches by count and by bytes (``batch.max_requests/max_bytes``)."""
    return list(chunk_requests(items, config.batch.max_requests, config.batch.max_bytes))


def estimate_tokens(items: list[tuple[str, bytes]]) -> int:
    """Prompt tokens, roughly: a token per four characters of the messages."""
    total = 0
    for _, item in items:
        for message in orjson.loads(item)["body"]["messages"]:
            total += (len(message.get("content") or "") + 3) // 4 + 4
        total += 3
    return total
