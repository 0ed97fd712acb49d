"""Classification: each answer normalised to one of a fixed set of labels, or to an explicit
invalid label (as openai/evals does), and scored against a gold column when there is one.

Labels may carry descriptions (``{labels}`` in the template lists them, one a line), and
few-shot ``examples`` go before each row as earlier turns of the chat. With
``multi_label`` (a ``labels`` list column) or ``rationale`` (a ``rationale`` column) the
answer is asked for as structured output, checked against its schema, and an invalid
one is sent again, as an extraction's is. Without the new keys, nothing changes."""

from __future__ import annotations

import re
from contextlib import suppress
from typing import Any, ClassVar, Literal

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, PrivateAttr, model_validator

from tablebatch.jobs.build import Template
from tablebatch.jobs.kinds.base import Chunk, Kind, register
from tablebatch.jobs.metrics import classification_metrics, multilabel_metrics
from tablebatch.jobs.report_text import pct
from tablebatch.jobs.schema import JobConfig, Strict, template_fields
from tablebatch.jobs.scoring import normalize_label
from tablebatch.jobs.structured import Checker, response_format
from tablebatch.jobs.text import as_text


class Example(Strict):
    """A few-shot example: an input row (column -> value) and its right answer."""

    input: dict[str, Any] = Field(description="The example's columns, as the template reads.")
    label: str | list[str] = Field(description="Its label (a list with multi_label).")
    rationale: str | None = Field(None, description="Why (with rationale: true).")


class ClassificationConfig(JobConfig):
    """A classification job: ``labels`` to choose from."""

    kind: Literal["classification"]
    labels: list[str] | dict[str, str] | None = Field(
        None, description="classification: the label set (a list, or label -> description)."
    )
    invalid_label: str = Field("INVALID", description="The label of an answer in no label.")
    multi_label: bool = Field(False, description="classification: any number of labels a row.")
    examples: list[Example] | None = Field(None, description="classification: few-shot turns.")
    rationale: bool = Field(False, description="classification: a rationale column.")
    _descriptions: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _check_labels(self) -> ClassificationConfig:
        if isinstance(self.labels, dict):
            self._descriptions = {str(k): str(v or "") for k, v in self.labels.items()}
            self.labels = list(self._descriptions)
        if self.multi_label and not self.labels:
            raise ValueError("multi_label: true needs labels: the set a row's labels come from")
        if not self.labels or len(self.labels) < 2:
            raise ValueError("classification needs labels: a list of at least two")
        if len({label.strip().lower() for label in self.labels}) != len(self.labels):
            raise ValueError("labels repeats a label (case is ignored)")
        if self.invalid_label in self.labels:
            raise ValueError("invalid_label must not be one of labels")
        self._check_examples()
        return self

    def _check_examples(self) -> None:
        """Every example fills the template's columns and answers with known labels."""
        needed = template_fields(self.prompt.template)
        if self.prompt.system:
            needed += template_fields(self.prompt.system)
        needed = [n for n in dict.fromkeys(needed) if n != "labels"]
        for i, example in enumerate(self.examples or []):
            missing = [n for n in needed if n not in example.input]
            if missing:
                raise ValueError(
                    f"examples[{i}].input lacks {missing[0]!r}, which the template reads; "
                    f"give it, e.g. input: {{{missing[0]}: ...}}"
                )
            given = example.label if isinstance(example.label, list) else [example.label]
            if isinstance(example.label, list) and not self.multi_label:
                raise ValueError(f"examples[{i}].label: one label (a list is for multi_label)")
            unknown = [g for g in given if g not in (self.labels or [])]
            if unknown:
                raise ValueError(
                    f"examples[{i}].label {unknown[0]!r} is not one of labels "
                    f"({', '.join(self.labels or [])})"
                )

    @property
    def descriptions(self) -> dict[str, str]:
        """Each label's description ('' where it has none)."""
        return {label: self._descriptions.get(label, "") for label in self.labels or []}


def normalized_labels(texts: pa.ChunkedArray | pa.Array, labels: list[str]) -> pa.Array:
    """``normalize_label`` of every text, null where none: the plain cases (a label up to
    case and surrounding punctuation) in Arrow, the rest (a label inside a sentence, say)
    in Python."""
    plain = pc.utf8_lower(pc.utf8_trim(texts, characters=" \t\r\n.!?\"'*`"))
    found = pc.index_in(plain, value_set=pa.array([label.lower() for label in labels]))
    fast = pc.take(pa.array(labels, pa.string()), found)
    fast = fast.combine_chunks() if isinstance(fast, pa.ChunkedArray) else fast
    slow = pc.and_(pc.is_null(fast), pc.is_valid(texts))
    slow = slow.combine_chunks() if isinstance(slow, pa.ChunkedArray) else slow
    if not pc.any(slow).as_py():
        return fast
    rows = pc.indices_nonzero(slow)
    texts_slow = pc.take(texts, rows).to_pylist()
    fixed = pa.array([normalize_label(t, labels) for t in texts_slow], pa.string())
    return pc.replace_with_mask(fast, slow, fixed) if len(fixed) else fast


def _counts(column: pa.ChunkedArray) -> dict[Any, int]:
    return {
        c["values"]: c["counts"]
        for c in pc.value_counts(column).to_pylist()
        if c["values"] is not None
    }


def _gold_sets(column: pa.ChunkedArray | pa.Array, labels: list[str]) -> list[list[str] | None]:
    """Each row's gold labels: a list, or text with labels separated by ``|`` (or a JSON
    list, as a CSV output holds one); None where there is no gold."""
    out: list[list[str] | None] = []
    for value in column.to_pylist():
        if value is None or (isinstance(value, str) and not value.strip()):
            out.append(None)
            continue
        if isinstance(value, str) and value.strip().startswith("["):
            with suppress(orjson.JSONDecodeError):
                value = orjson.loads(value)
        parts = value if isinstance(value, list) else str(value).split("|")
        found = {normalize_label(str(p), labels) for p in parts if str(p).strip()}
        out.append([label for label in labels if label in found])
    return out


@register
class Classification(Kind):
    """``label``: the answer as one of ``labels``, or ``invalid_label``; with
    ``multi_label``, ``labels`` (a list of them); with ``rationale``, ``rationale``."""

    name = "classification"
    Config = ClassificationConfig
    columns: ClassVar[dict[str, pa.DataType]] = {"label": pa.string()}
    config: ClassificationConfig

    def __init__(self, config: JobConfig) -> None:
        super().__init__(config)
        self.structured = self.config.multi_label or self.config.rationale
        self.retry_invalid = self.structured  # type: ignore[misc]  # structured answers: retried
        self.checker = Checker(self.schema()) if self.structured else None

    def schema(self) -> dict[str, Any]:
        """The JSON Schema of a structured answer (rationale first: the reason, then the
        verdict)."""
        enum = {"type": "string", "enum": list(self.config.labels or [])}
        props: dict[str, Any] = {}
        if self.config.rationale:
            props["rationale"] = {"type": "string", "description": "why, in a sentence"}
        if self.config.multi_label:
            props["labels"] = {"type": "array", "items": enum}
        else:
            props["label"] = enum
        return {
            "type": "object",
            "properties": props,
            "required": list(props),
            "additionalProperties": False,
        }

    # -- requests --------------------------------------------------------------------

    def placeholders(self) -> dict[str, str]:
        """``{labels}`` (when the prompt uses it): the labels and descriptions, one a line."""
        used = template_fields(self.config.prompt.template)
        if self.config.prompt.system:
            used += template_fields(self.config.prompt.system)
        if "labels" not in used:
            return {}
        return {
            "labels": "\n".join(
                f"{label}: {text}" if text else label
                for label, text in self.config.descriptions.items()
            )
        }

    def example_messages(self) -> list[dict[str, Any]]:
        """Each example as a user turn (the template over its input) and the right answer."""
        template = Template(self.config.prompt.template)
        filled = self.placeholders()
        turns: list[dict[str, Any]] = []
        for example in self.config.examples or []:
            row = {k: "" if v is None else str(v) for k, v in example.input.items()} | filled
            turns.append({"role": "user", "content": template.render(row)})
            turns.append({"role": "assistant", "content": self._answer_text(example)})
        return turns

    def _answer_text(self, example: Example) -> str:
        if not self.structured:
            return str(example.label)
        value: dict[str, Any] = {}
        if self.config.rationale:
            value["rationale"] = example.rationale or ""
        if self.config.multi_label:
            value["labels"] = example.label if isinstance(example.label, list) else [example.label]
        else:
            value["label"] = example.label
        return orjson.dumps(value).decode()

    def input_keys(self) -> list[tuple[str, str]]:
        """The columns the examples name (the table must have them too)."""
        return [
            (f"examples[{i}].input", column)
            for i, example in enumerate(self.config.examples or [])
            for column in example.input
            if column not in self.placeholders()
        ]

    def body(self) -> dict[str, Any]:
        """Structured output, with ``multi_label`` or ``rationale``."""
        if not self.structured:
            return {}
        name = re.sub(r"[^A-Za-z0-9_-]", "_", self.config.name)
        return {"response_format": response_format(self.schema(), name)}

    # -- answers ---------------------------------------------------------------------

    def check_answers(self, answers: pa.Array) -> pa.Array | None:
        """Why a structured answer is invalid (None without structured output)."""
        if self.checker is None:
            return None
        return pa.array([self.checker.problem(t) for t in answers.to_pylist()], pa.string())

    def output_columns(self) -> dict[str, pa.DataType]:
        """``label`` or ``labels``, and ``rationale``."""
        columns: dict[str, pa.DataType] = (
            {"labels": pa.list_(pa.string())} if self.config.multi_label else dict(self.columns)
        )
        if self.config.rationale:
            columns["rationale"] = pa.string()
        return columns

    def output(self, chunk: Chunk) -> dict[str, Any]:
        """The label of every answered row (null where the row has no answer)."""
        if self.checker is not None:
            return self._structured_output(chunk)
        found = normalized_labels(chunk.answers["answer"], self.config.labels or [])
        label = pc.fill_null(found, self.config.invalid_label)
        out = pc.if_else(chunk.done, label, pa.scalar(None, pa.string()))
        return {"label": out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out}

    def _structured_output(self, chunk: Chunk) -> dict[str, Any]:
        assert self.checker is not None
        done = chunk.done.to_pylist()
        parsed = [
            self.checker.parse(t)[0] if ok else None
            for t, ok in zip(chunk.answers["answer"].to_pylist(), done, strict=True)
        ]
        labels = self.config.labels or []
        out: dict[str, Any] = {}
        if self.config.multi_label:
            out["labels"] = [
                None if p is None else [x for x in labels if x in set(p["labels"])] for p in parsed
            ]
        else:
            out["label"] = [None if p is None else p["label"] for p in parsed]
        if self.config.rationale:
            out["rationale"] = [None if p is None else p["rationale"] for p in parsed]
        return out

    def long_columns(self) -> tuple[str, ...]:
        """The rationales."""
        return ("rationale",) if self.config.rationale else ()

    # -- the report ------------------------------------------------------------------

    def report(self, table: pa.Table, output: pa.Table) -> dict[str, Any]:
        """Label counts and, with a gold column, accuracy, F1 and the confusion matrix (with
        ``multi_label``: micro/macro F1, subset accuracy, Hamming loss, per-label scores)."""
        if self.config.multi_label:
            return self._multi_report(table, output)
        section: dict[str, Any] = {"labels": _counts(output.column("label"))}
        if self.config.gold_column:
            section["gold"] = self._gold(table, output)
        return section

    def _gold(self, table: pa.Table, output: pa.Table) -> dict[str, Any]:
        """The answered rows against the gold column (gold values are normalised to the labels
        as answers are; rows whose gold is none of them are counted, not scored)."""
        config = self.config
        labels = config.labels or []
        gold = normalized_labels(pc.fill_null(as_text(table[config.gold_column or ""]), ""), labels)
        done = pc.equal(output.column("status"), "completed")
        usable = pc.and_(done, pc.is_valid(gold))
        unusable = (pc.sum(done).as_py() or 0) - (pc.sum(usable).as_py() or 0)
        predicted = pc.fill_null(output.column("label").filter(usable), config.invalid_label)
        metrics = classification_metrics(
            predicted.to_pylist(), gold.filter(usable).to_pylist(), labels, config.invalid_label
        )
        metrics["gold_column"] = config.gold_column
        metrics["rows_without_usable_gold"] = unusable
        return metrics

    def _multi_report(self, table: pa.Table, output: pa.Table) -> dict[str, Any]:
        labels = self.config.labels or []
        done = pc.equal(output.column("status"), "completed").to_pylist()
        predicted = output.column("labels").to_pylist()
        counts = dict.fromkeys(labels, 0)
        for row in predicted:
            for label in row or []:
                counts[label] += 1
        section: dict[str, Any] = {"labels": counts, "multi_label": {}}
        gold_column = self.config.gold_column
        if gold_column:
            gold = _gold_sets(table[gold_column], labels)
            pairs = [
                (p or [], g)
                for p, g, ok in zip(predicted, gold, done, strict=True)
                if ok and g is not None
            ]
            metrics = multilabel_metrics([p for p, _ in pairs], [g for _, g in pairs], labels)
            metrics["gold_column"] = gold_column
            metrics["rows_without_usable_gold"] = sum(done) - len(pairs)
            section["multi_label"] = metrics
        return section

    @classmethod
    def markdown(cls, report: dict[str, Any]) -> list[str]:
        """Accuracy, per-label metrics and the confusion matrix."""
        multi = report.get("multi_label")
        if multi:
            return _multi_markdown(multi)
        gold = report.get("gold")
        if not gold:
            return []
        matrix = gold["confusion_matrix"]
        return [
            "",
            f"## Against `{gold['gold_column']}` ({gold['scored_rows']} rows)",
            "",
            f"Accuracy {pct(gold['accuracy'])}, macro-F1 {pct(gold['macro_f1'])}, "
            f"invalid answers {gold['invalid_answers']}.",
            "",
            "| label | precision | recall | F1 | support |",
            "|---|---|---|---|---|",
            *[
                f"| {label} | {pct(m['precision'])} | {pct(m['recall'])} | {pct(m['f1'])} "
                f"| {m['support']} |"
                for label, m in gold["per_label"].items()
            ],
            "",
            "Confusion matrix (rows: gold, columns: answer):",
            "",
            "| gold \\ answer | " + " | ".join(matrix["labels"]) + " |",
            "|---" * (len(matrix["labels"]) + 1) + "|",
            *[
                f"| {g} | " + " | ".join(str(v) for v in row.values()) + " |"
                for g, row in matrix["rows"].items()
            ],
        ]

    @classmethod
    def summary(cls, report: dict[str, Any]) -> list[str]:
        """Accuracy and macro-F1 against the gold column."""
        multi = report.get("multi_label")
        if multi:
            return [
                f"  micro-F1 {multi['micro_f1']:.1%}, macro-F1 {multi['macro_f1']:.1%}, subset "
                f"accuracy {multi['subset_accuracy']:.1%}, Hamming loss "
                f"{multi['hamming_loss']:.3f} against {multi['gold_column']}"
            ]
        gold = report.get("gold")
        if not gold:
            return []
        return [
            f"  accuracy {gold['accuracy']:.1%}, macro-F1 {gold['macro_f1']:.1%} against "
            f"{gold['gold_column']} ({gold['invalid_answers']} invalid answers)"
        ]

    @classmethod
    def table_rows(cls, report: dict[str, Any]) -> list[dict[str, Any]] | None:
        """Per-label precision, recall, F1 and support."""
        gold = report.get("gold") or report.get("multi_label")
        if not gold:
            return None
        return [{"label": label, **m} for label, m in gold["per_label"].items()]


def _multi_markdown(multi: dict[str, Any]) -> list[str]:
    """The multi-label scores as markdown."""
    return [
        "",
        f"## Against `{multi['gold_column']}` ({multi['scored_rows']} rows, multi-label)",
        "",
        f"Micro-F1 {pct(multi['micro_f1'])}, macro-F1 {pct(multi['macro_f1'])}, subset "
        f"accuracy {pct(multi['subset_accuracy'])}, Hamming loss {multi['hamming_loss']:.3f}.",
        "",
        "| label | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
        *[
            f"| {label} | {pct(m['precision'])} | {pct(m['recall'])} | {pct(m['f1'])} "
            f"| {m['support']} |"
            for label, m in multi["per_label"].items()
        ],
    ]
