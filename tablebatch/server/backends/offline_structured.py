"""Structured answers of the offline backend: JSON of a request's ``response_format``
schema, read honestly off the prompt's text — never tuned to a dataset.

- numbers: the first number in the text (for a field whose name or description speaks
  of money, the first after a currency mark);
- dates: the first ISO date, or a date written out ("March 3, 2026", "3 March 2026");
- booleans: whether a word of the field's name appears in the text, not negated;
- enums and labels: the values whose words (and the words of a ``value: description``
  line of the prompt), cut to five letters, overlap the text's most, else one by a hash
  of the text (a list of them: every value that overlaps, else one);
- strings: a ``Field: value`` line of the text for the field, else an extract;
- lists of strings: the text's longest distinct words.

A field that may be null and has no cue in the text is null. The same prompt gives the
same JSON, every time.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Callable
from typing import Any

import orjson

Pick = Callable[[list[str], str, str], str]  # choices, text, model -> one of the choices

_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:[.,]\d+)?")
_MONEY = re.compile(r"(?:[$€£¥]\s?|\b(?:usd|eur|gbp)\s?)(\d+(?:[.,]\d+)?)", re.IGNORECASE)
_ISO = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_name) if m}
_MONTHS |= {m.lower(): i for i, m in enumerate(calendar.month_abbr) if m}
_MONTH = "|".join(sorted(_MONTHS, key=len, reverse=True))
_WRITTEN = re.compile(
    rf"\b(?:({_MONTH})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?,?\s+(\d{{4}})"
    rf"|(\d{{1,2}})(?:st|nd|rd|th)?\s+({_MONTH})\.?,?\s+(\d{{4}}))\b",
    re.IGNORECASE,
)
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]+")
_NEGATIONS = frozenset({"not", "no", "never", "without", "don't", "didn't", "doesn't", "isn't"})
_MONEY_WORDS = frozenset({"amount", "price", "cost", "total", "refund", "charge", "paid", "fee"})
_STOP = frozenset(
    """the a an and or but of to in on for with at by from is are was were be been it this that
    my our your their i we you they he she me us them have has had do does did not no can could
    would should will just very so as if then than there here what which who when where how
    please thanks thank hi hello""".split()
)


def _types(schema: dict[str, Any]) -> tuple[list[str], bool]:
    kind = schema.get("type", "string")
    kinds = kind if isinstance(kind, list) else [kind]
    nullable = "null" in kinds or None in (schema.get("enum") or [])
    return [k for k in kinds if k != "null"], nullable


def _words(text: str) -> list[str]:
    return [w.lower().strip("'") for w in _WORD.findall(text)]


def structured(
    schema: dict[str, Any],
    text: str,
    instructions: str,
    pick: Pick,
    model: str = "",
    name: str = "",
) -> Any:
    """A value of ``schema`` for the data ``text`` (``instructions``: the rest of the
    prompt, where label descriptions are; ``pick``: the backend's choice among values
    with no cue — its sentiment lexicon, else a hash)."""
    kinds, nullable = _types(schema)
    kind = kinds[0] if kinds else "string"
    about = f"{name} {schema.get('description', '')}"
    if "enum" in schema:
        values = [v for v in schema["enum"] if v is not None]
        return _enum(values, text, instructions, pick, model)
    if kind == "object":
        props = schema.get("properties") or {}
        return {k: structured(sub, text, instructions, pick, model, k) for k, sub in props.items()}
    if kind == "array":
        items = schema.get("items") or {}
        if "enum" in items:
            return _enums(list(items["enum"]), text, instructions, pick, model)
        if _types(items)[0][:1] in (["object"], ["array"]):
            return [structured(items, text, instructions, pick, model, name)]
        return _keywords(text, name)
    if kind in ("number", "integer"):
        found = _number(text, about)
        if found is None:
            return None if nullable else 0
        return round(found) if kind == "integer" else found
    if kind == "boolean":
        return _flag(text, name)
    if schema.get("format") == "date":
        found_date = _date(text)
        return found_date if found_date or nullable else "1970-01-01"
    return _string(text, name, nullable)


def _stems(text: str) -> set[str]:
    """The words of a text cut to five letters ("charged", "charges": "charg"), stop words
    and words of two letters left out."""
    return {w[:5] for w in _words(text) if len(w) > 2 and w not in _STOP}


def _cues(value: str, instructions: str) -> set[str]:
    """The stems of a value and of its ``value: description`` line in the prompt."""
    stems = _stems(value)
    for line in instructions.splitlines():
        head, sep, rest = line.strip(" -*\t").partition(":")
        if sep and head.strip().lower() == value.lower():
            stems |= _stems(rest)
    return stems


def _overlaps(values: list[str], text: str, instructions: str) -> list[int]:
    stems = _stems(text)
    return [len(_cues(v, instructions) & stems) for v in values]


def _enum(values: list[str], text: str, instructions: str, pick: Pick, model: str) -> str:
    overlap = _overlaps(values, text, instructions)
    best = max(overlap, default=0)
    if best > 0:
        tied = [v for v, o in zip(values, overlap, strict=True) if o == best]
        return tied[0] if len(tied) == 1 else pick(tied, text, model)
    return pick(values, text, model)  # polarity for sentiment-like values, else a hash


def _enums(values: list[str], text: str, instructions: str, pick: Pick, model: str) -> list[str]:
    overlap = _overlaps(values, text, instructions)
    found = [v for v, o in zip(values, overlap, strict=True) if o > 0]
    return found or [pick(values, text, model)]


def _number(text: str, about: str) -> float | None:
    money = set(_words(about)) & _MONEY_WORDS
    if money:
        match = _MONEY.search(text)
        return float(match.group(1).replace(",", ".")) if match else None
    match = _NUMBER.search(text)
    return float(match.group().replace(",", ".")) if match else None


def _date(text: str) -> str | None:
    iso = _ISO.search(text)
    if iso:
        try:
            return dt.date(*(int(g) for g in iso.groups())).isoformat()
        except ValueError:
            pass
    for match in _WRITTEN.finditer(text):
        g = match.groups()
        month, day, year = (g[0], g[1], g[2]) if g[0] else (g[4], g[3], g[5])
        try:
            return dt.date(int(year), _MONTHS[month.lower()], int(day)).isoformat()
        except ValueError:
            continue
    return None


def _flag(text: str, name: str) -> bool:
    """Whether a word of the field's name (``refund_requested``: refund, requested) is in the
    text, its stem at least, with no negation just before it."""
    cues = [w[:5] for w in re.split(r"[_\W]+", name.lower()) if len(w) > 3 and w not in _STOP]
    words = _words(text)
    for i, word in enumerate(words):
        negated = _NEGATIONS.intersection(words[max(0, i - 3) : i])
        if any(word.startswith(c) for c in cues) and not negated:
            return True
    return False


def _string(text: str, name: str, nullable: bool) -> str | None:
    label = re.escape(name.replace("_", " "))
    line = re.search(rf"(?im)^\s*{label}\s*:\s*(.+)$", text)
    if line:
        return line.group(1).strip()
    if nullable:
        return None
    first = re.split(r"(?<=[.!?])\s+", text.strip(), maxsplit=1)[0]
    cut = first.split()
    return " ".join(cut[:12])


def _keywords(text: str, name: str, count: int = 3) -> list[str]:
    seen: list[str] = []
    for word in sorted(_words(text), key=lambda w: (-len(w), w)):
        if word not in _STOP and word not in seen and len(word) > 3:
            seen.append(word)
        if len(seen) == count:
            break
    return seen


def data_text(prompt: str) -> str:
    """The part of a prompt that is data, not instructions: its last paragraph; in a prompt
    of one paragraph, the longest quoted text (``Classify: … 'Terrible experience.'``),
    else the whole prompt."""
    blocks = [b.strip() for b in re.split(r"\n\s*\n", prompt) if b.strip()]
    if len(blocks) > 1:
        return blocks[-1]
    quoted = re.findall(r"'([^'\n]{3,})'|\"([^\"\n]{3,})\"", prompt)
    parts = [a or b for a, b in quoted]
    return max(parts, key=len) if parts else prompt


def requested_schema(request: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON Schema a request's ``response_format`` asks for, if it asks for one."""
    wanted = request.get("response_format")
    if not isinstance(wanted, dict) or wanted.get("type") != "json_schema":
        return None
    schema = (wanted.get("json_schema") or {}).get("schema")
    return schema if isinstance(schema, dict) else None


def broken(content: str, digest: int) -> str:
    """An answer made invalid on purpose (the ``invalid_json_rate`` fault): cut short (not
    JSON), or with a field removed (JSON that breaks the schema)."""
    if digest % 2 or not content.startswith("{") or content == "{}":
        return content[: max(1, len(content) // 2)]
    value = orjson.loads(content)
    value.pop(next(iter(value)))
    return orjson.dumps(value).decode()
