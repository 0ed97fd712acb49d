"""Extraction: a schema in, typed columns out. Each request asks for structured output
(strict JSON of the schema, in each dialect's own way); each answer is parsed and checked
against the schema with ``jsonschema``; one typed column per field. An answer that is not
valid JSON or breaks the schema is ``invalid`` (its ``parse_error`` names the field and the
problem) and is sent again in the next attempt; rows answered well are never re-sent."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, ValidationInfo, field_validator, model_validator

from tablebatch.jobs.kinds.base import Chunk, Kind, register
from tablebatch.jobs.report_text import num, pct
from tablebatch.jobs.rows import OUTPUT_COLUMNS
from tablebatch.jobs.schema import JobConfig
from tablebatch.jobs.structured import (
    Checker,
    arrow_type,
    file_schema,
    inline_schema,
    readable,
    response_format,
)
from tablebatch.jobs.text import text_values

TRUE = {"true", "yes", "y", "1", "t"}
FALSE = {"false", "no", "n", "0", "f"}


class ExtractionConfig(JobConfig):
    """An extraction job: ``output_schema`` (fields inline, or a JSON Schema file)."""

    kind: Literal["extraction"]
    output_schema: dict[str, Any] | str = Field(
        description="extraction: field -> {type, description, values, items, required}, or a "
        "JSON Schema file (an object schema) relative to the project."
    )
    gold_columns: dict[str, str] | None = Field(
        None, description="extraction: field -> input column holding its right value."
    )

    @field_validator("output_schema", mode="before")
    @classmethod
    def _read_schema(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            root = (info.context or {}).get("root") or Path.cwd()
            path = Path(value) if Path(value).is_absolute() else Path(root) / value
            return {"$file": value, **file_schema(path)}
        if isinstance(value, dict):
            return inline_schema(value)
        raise ValueError("give the fields (a mapping) or the path of a JSON Schema file")

    @model_validator(mode="after")
    def _check_fields(self) -> ExtractionConfig:
        fields = list(self.json_schema["properties"])
        taken = sorted(set(fields) & (set(OUTPUT_COLUMNS) | {"parse_error"}))
        if taken:
            raise ValueError(
                f"output_schema: field {taken[0]!r} is the name of an output column every job "
                "has; rename the field"
            )
        for field in self.gold_columns or {}:
            if field not in fields:
                raise ValueError(
                    f"gold_columns: {field!r} is not a field of output_schema ({', '.join(fields)})"
                )
        return self

    @property
    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema asked for and checked (without where it was read from)."""
        schema = self.output_schema
        assert isinstance(schema, dict)
        return {k: v for k, v in schema.items() if k != "$file"}


def _norm(value: Any, kind: pa.DataType) -> Any:
    """A value, or a gold text, in a form two of them compare equal in."""
    if value is None:
        return None
    if pa.types.is_list(kind):
        items = value if isinstance(value, list) else [v for v in str(value).split("|") if v]
        return tuple(sorted(str(_norm(v, kind.value_type)) for v in items))
    if pa.types.is_boolean(kind):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        return True if text in TRUE else False if text in FALSE else text
    if pa.types.is_floating(kind) or pa.types.is_integer(kind):
        try:
            return round(float(value), 6)
        except ValueError:
            return str(value).strip().lower()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value).strip().lower() or None


@register
class Extraction(Kind):
    """One typed column per field of ``output_schema``, and ``parse_error``."""

    name = "extraction"
    Config = ExtractionConfig
    retry_invalid = True
    config: ExtractionConfig

    def __init__(self, config: JobConfig) -> None:
        super().__init__(config)
        self.checker = Checker(self.config.json_schema)

    def input_keys(self) -> list[tuple[str, str]]:
        """The gold columns."""
        return [(f"gold_columns.{f}", c) for f, c in (self.config.gold_columns or {}).items()]

    def placeholders(self) -> dict[str, str]:
        """``{schema}``: the fields, their types and descriptions, one a line."""
        return {"schema": readable(self.config.json_schema)}

    def body(self) -> dict[str, Any]:
        """Structured output of the schema (strict)."""
        name = re.sub(r"[^A-Za-z0-9_-]", "_", self.config.name)
        return {"response_format": response_format(self.config.json_schema, name)}

    def check_answers(self, answers: pa.Array) -> pa.Array:
        """Why each answer is not valid JSON of the schema (null where it is)."""
        return pa.array([self.checker.problem(t) for t in answers.to_pylist()], pa.string())

    def output_columns(self) -> dict[str, pa.DataType]:
        """A typed column per field, then ``parse_error``."""
        props = self.config.json_schema["properties"]
        return {name: arrow_type(sub) for name, sub in props.items()} | {"parse_error": pa.string()}

    def output(self, chunk: Chunk) -> dict[str, Any]:
        """The fields of every valid answer; why an invalid one is not."""
        texts = chunk.answers["answer"].to_pylist()
        status = chunk.answers["status"].to_pylist()
        done = [s == "completed" for s in status]
        columns: dict[str, Any] = self.checker.columns(texts, done)
        columns["parse_error"] = [
            self.checker.problem(t) if s == "invalid" else None
            for t, s in zip(texts, status, strict=True)
        ]
        return columns

    def long_columns(self) -> Sequence[str]:
        """The parse errors (the report counts rows by status instead)."""
        return ("parse_error",)

    def report(self, table: pa.Table, output: pa.Table) -> dict[str, Any]:
        """Per field: fill rate, value distribution (enums, booleans), numeric range; the
        validity rate; with ``gold_columns``, per-field accuracy."""
        status = output.column("status")
        done = pc.equal(status, "completed")
        answered = pc.sum(done).as_py() or 0
        invalid = pc.sum(pc.equal(status, "invalid")).as_py() or 0
        fields: dict[str, Any] = {}
        props = self.config.json_schema["properties"]
        for name, sub in props.items():
            values = output.column(name).filter(done)
            kind = values.type
            stats: dict[str, Any] = {
                "filled": len(values) - values.null_count,
                "fill_rate": (len(values) - values.null_count) / answered if answered else None,
            }
            if "enum" in sub or pa.types.is_boolean(kind):
                counts = pc.value_counts(values).to_pylist()
                stats["values"] = {
                    str(c["values"]).lower() if isinstance(c["values"], bool) else c["values"]: (
                        c["counts"]
                    )
                    for c in sorted(counts, key=lambda c: -c["counts"])
                    if c["values"] is not None
                }
            if pa.types.is_floating(kind) or pa.types.is_integer(kind):
                present = [v for v in values.to_pylist() if v is not None]
                stats["range"] = (
                    {
                        "min": min(present),
                        "max": max(present),
                        "mean": math.fsum(present) / len(present),
                    }
                    if present
                    else None
                )
            fields[name] = stats
        section: dict[str, Any] = {
            "extraction": {
                "answered": answered,
                "invalid": invalid,
                "validity_rate": answered / (answered + invalid) if answered + invalid else None,
                "fields": fields,
            }
        }
        if self.config.gold_columns:
            section["extraction"]["gold"] = self._gold(table, output, done)
        return section

    def _gold(self, table: pa.Table, output: pa.Table, done: Any) -> dict[str, Any]:
        """Per field, the share of answered rows whose value is the gold column's."""
        scores = {}
        rows = done.to_pylist()
        for field, column in (self.config.gold_columns or {}).items():
            kind = output.schema.field(field).type
            got = output.column(field).to_pylist()
            gold = text_values(table[column])
            pairs = [
                (_norm(g, kind), _norm(v, kind))
                for v, g, ok in zip(got, gold, rows, strict=True)
                if ok and g.strip()
            ]
            right = sum(1 for g, v in pairs if g == v)
            scores[field] = {
                "gold_column": column,
                "scored": len(pairs),
                "accuracy": right / len(pairs) if pairs else None,
            }
        return scores

    @classmethod
    def markdown(cls, report: dict[str, Any]) -> list[str]:
        """Validity, and a line per field."""
        ex = report["extraction"]
        lines = [
            "",
            f"Valid answers: {pct(ex['validity_rate'])} ({ex['answered']} valid, "
            f"{ex['invalid']} invalid).",
            "",
            "| field | fill rate | values / range | accuracy |",
            "|---|---|---|---|",
        ]
        gold = ex.get("gold") or {}
        for name, stats in ex["fields"].items():
            shown = ""
            if stats.get("values"):
                shown = ", ".join(f"{k}: {v}" for k, v in stats["values"].items())
            elif stats.get("range"):
                r = stats["range"]
                shown = f"{num(r['min'])} to {num(r['max'])}, mean {num(r['mean'])}"
            accuracy = pct(gold[name]["accuracy"]) if name in gold else ""
            lines.append(f"| {name} | {pct(stats['fill_rate'])} | {shown} | {accuracy} |")
        return lines

    @classmethod
    def summary(cls, report: dict[str, Any]) -> list[str]:
        """Validity, fill rates, and accuracy against the gold columns."""
        ex = report["extraction"]
        rate = ex["validity_rate"]
        filled = ", ".join(
            f"{n} {'–' if s['fill_rate'] is None else format(s['fill_rate'], '.0%')}"
            for n, s in ex["fields"].items()
        )
        valid = "–" if rate is None else f"{rate:.1%}"
        lines = [f"  valid answers {valid} ({ex['invalid']} invalid); filled: {filled}"]
        for name, g in (ex.get("gold") or {}).items():
            accuracy = "–" if g["accuracy"] is None else f"{g['accuracy']:.1%}"
            lines.append(f"  {name}: accuracy {accuracy} against {g['gold_column']}")
        return lines

    @classmethod
    def table_rows(cls, report: dict[str, Any]) -> list[dict[str, Any]] | None:
        """A row per field."""
        gold = report["extraction"].get("gold") or {}
        return [
            {
                "field": name,
                "fill_rate": s["fill_rate"],
                "accuracy": gold.get(name, {}).get("accuracy"),
            }
            for name, s in report["extraction"]["fields"].items()
        ]
