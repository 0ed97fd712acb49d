"""Structured output: the fields of a job's ``output_schema`` as a JSON Schema (what is
asked for, strict), as Arrow types (the typed output columns), and every answer checked
against it (``jsonschema``, not a validator of our own) and turned into typed values.

A field is written inline (``{type: enum, values: [...]}``, ``{type: list, items:
string}``, ``required: false`` …) or comes from a JSON Schema file whose top is an
object; either way the job works from one JSON Schema.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError

# The inline field types and their JSON Schema.
SIMPLE = {
    "string": {"type": "string"},
    "number": {"type": "number"},
    "integer": {"type": "integer"},
    "boolean": {"type": "boolean"},
    "date": {"type": "string", "format": "date"},
}
TYPES = (*SIMPLE, "enum", "list", "object")
FIELD_KEYS = {"type", "description", "values", "items", "required", "fields"}


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def inline_schema(fields: dict[str, Any], where: str = "") -> dict[str, Any]:
    """The strict JSON Schema of inline fields (every field listed in ``required``, an
    optional one nullable, as strict structured output asks); ValueError names the key
    (within ``output_schema``: ``severity.values: …``)."""
    if not isinstance(fields, dict) or not fields:
        raise ValueError(
            f"{where + ': ' if where else ''}give the fields, e.g. {{product: {{type: string}}}}"
            ", or a JSON Schema file"
        )
    properties = {}
    for name, spec in fields.items():
        properties[str(name)] = _field(spec, _at(where, str(name)))
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _field(spec: Any, where: str) -> dict[str, Any]:
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: give the field as {{type: ...}}")
    unknown = sorted(set(spec) - FIELD_KEYS)
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: unknown key; a field takes {sorted(FIELD_KEYS)}")
    kind = spec.get("type")
    if kind not in TYPES:
        raise ValueError(f"{where}.type: unknown type {kind!r}; use one of {', '.join(TYPES)}")
    out: dict[str, Any]
    if kind == "enum":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise ValueError(f"{where}.values: an enum needs values, e.g. [low, medium, high]")
        out = {"type": "string", "enum": [str(v) for v in values]}
    elif kind == "list":
        out = {"type": "array", "items": _field(spec.get("items", "string"), _at(where, "items"))}
    elif kind == "object":
        out = inline_schema(spec.get("fields") or {}, _at(where, "fields"))
    else:
        out = dict(SIMPLE[kind])
    if "values" in spec and kind != "enum":
        raise ValueError(f"{where}.values: only an enum takes values")
    if spec.get("description"):
        out["description"] = str(spec["description"])
    if spec.get("required", True) is False:
        out = _nullable(out)
    return out


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` that also allows null."""
    out = dict(schema)
    if "enum" in out:
        out["enum"] = [*out["enum"], None]
    out["type"] = [out["type"], "null"]
    return out


def file_schema(path: Path) -> dict[str, Any]:
    """The JSON Schema in ``path``: an object schema with properties, and a valid one."""
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"no such file {str(path)!r}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path.name} is not JSON: {exc}") from None
    if (
        not isinstance(schema, dict)
        or schema.get("type") != "object"
        or not isinstance(schema.get("properties"), dict)
        or not schema["properties"]
    ):
        raise ValueError(
            f"{path.name} must be an object schema "
            '({"type": "object", "properties": {...}}): its fields become the output columns'
        )
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ValueError(f"{path.name} is not a valid JSON Schema: {exc.message}") from None
    return schema


def _types(schema: dict[str, Any]) -> list[str]:
    kind = schema.get("type", "string")
    return [t for t in (kind if isinstance(kind, list) else [kind]) if t != "null"]


def arrow_type(schema: dict[str, Any]) -> pa.DataType:
    """The Arrow type of a value of ``schema``."""
    kinds = _types(schema)
    kind = kinds[0] if len(kinds) == 1 else "string"
    if kind == "string" and schema.get("format") == "date":
        return pa.date32()
    if kind == "number":
        return pa.float64()
    if kind == "integer":
        return pa.int64()
    if kind == "boolean":
        return pa.bool_()
    if kind == "array":
        return pa.list_(arrow_type(schema.get("items") or {}))
    if kind == "object" and schema.get("properties"):
        props = schema["properties"]
        return pa.struct([(name, arrow_type(sub)) for name, sub in props.items()])
    return pa.string()  # strings, enums, and anything of several types (as text)


def response_format(schema: dict[str, Any], name: str) -> dict[str, Any]:
    """The ``response_format`` of a chat body asking for JSON of ``schema`` (strict)."""
    return {
        "type": "json_schema",
        "json_schema": {"name": name[:64], "schema": schema, "strict": True},
    }


def readable(schema: dict[str, Any]) -> str:
    """The fields, their types and descriptions, one a line (the ``{schema}`` placeholder)."""
    lines = []
    required = set(schema.get("required") or [])
    for name, sub in schema["properties"].items():
        lines.append(f"- {name}: {_describe(sub)}" + ("" if name in required else " (optional)"))
    return "\n".join(lines)


def _describe(schema: dict[str, Any]) -> str:
    kinds = _types(schema)
    optional = isinstance(schema.get("type"), list) and "null" in schema["type"]
    if "enum" in schema:
        text = "one of " + ", ".join(str(v) for v in schema["enum"] if v is not None)
    elif schema.get("format") == "date":
        text = "a date (YYYY-MM-DD)"
    elif kinds == ["array"]:
        text = f"a list of {_describe(schema.get('items') or {})}"
    elif kinds == ["object"]:
        text = "an object with " + ", ".join(schema.get("properties") or {})
    else:
        text = {"string": "text", "number": "a number", "integer": "a whole number"}.get(
            kinds[0] if kinds else "string", kinds[0] if kinds else "text"
        )
        text = "true or false" if kinds == ["boolean"] else text
    if optional:
        text += " or null"
    return text + (f" — {schema['description']}" if schema.get("description") else "")


class Checker:
    """Every answer parsed and checked against the schema: why it is invalid (naming the
    field), and the typed values of the valid ones."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self.fields = list(schema["properties"])
        self.types = {name: arrow_type(sub) for name, sub in schema["properties"].items()}
        self.validator = Draft202012Validator(schema, format_checker=FormatChecker())

    def problem(self, text: str | None) -> str | None:
        """Why the answer ``text`` is not valid JSON of the schema (None: it is)."""
        return self.parse(text)[1]

    def parse(self, text: str | None) -> tuple[dict[str, Any] | None, str | None]:
        """The answer's object and None, or None and why it is invalid."""
        if text is None:
            return None, "no answer"
        try:
            value = orjson.loads(_unfenced(text))
        except orjson.JSONDecodeError as exc:
            return None, f"not valid JSON: {exc}"
        errors = sorted(self.validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        if errors:
            return None, "; ".join(_reason(e) for e in errors[:3])
        return value, None

    def columns(self, texts: list[str | None], keep: list[bool]) -> dict[str, pa.Array]:
        """One typed column per field (null where ``keep`` is false or the answer invalid)."""
        values: dict[str, list[Any]] = {name: [] for name in self.fields}
        for text, ok in zip(texts, keep, strict=True):
            parsed = self.parse(text)[0] if ok else None
            for name in self.fields:
                raw = parsed.get(name) if parsed else None
                values[name].append(_typed(raw, self.types[name]))
        return {name: pa.array(values[name], self.types[name]) for name in self.fields}


def _unfenced(text: str) -> str:
    """The JSON of an answer, without a Markdown code fence a model may put around it."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        stripped = stripped.rsplit("```", 1)[0]
    return stripped


def _reason(error: Any) -> str:
    path = "/".join(str(p) for p in error.absolute_path)
    return f"{path}: {error.message}" if path else error.message


def _typed(value: Any, kind: pa.DataType) -> Any:
    """A JSON value as a value of the Arrow type ``kind``."""
    if value is None:
        return None
    if pa.types.is_date32(kind):
        return dt.date.fromisoformat(value) if isinstance(value, str) else None
    if pa.types.is_list(kind):
        return [_typed(v, kind.value_type) for v in value]
    if pa.types.is_struct(kind):
        return {f.name: _typed(value.get(f.name), f.type) for f in kind}
    if pa.types.is_string(kind) and not isinstance(value, str):
        return orjson.dumps(value).decode()
    return value


def iter_fields(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The top-level fields of ``schema``, in order."""
    yield from schema["properties"].items()
