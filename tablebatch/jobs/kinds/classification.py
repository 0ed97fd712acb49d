"""Classification: each answer normalised to one of a fixed set of labels, or to an explicit
invalid label (as openai/evals does), and scored against a gold column when there is one."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from tablebatch.jobs.kinds.base import Chunk, Kind, register
from tablebatch.jobs.metrics import classification_metrics
from tablebatch.jobs.report_text import pct
from tablebatch.jobs.schema import JobConfig
from tablebatch.jobs.scoring import normalize_label
from tablebatch.jobs.text import as_text


class ClassificationConfig(JobConfig):
    """A classification job: ``labels`` to choose from."""

    kind: Literal["classification"]
    labels: list[str] | None = Field(None, description="classification: the label set.")
    invalid_label: str = Field("INVALID", description="The label of an answer in no label.")

    @model_validator(mode="after")
    def _check_labels(self) -> ClassificationConfig:
        if not self.labels or len(self.labels) < 2:
            raise ValueError("classification needs labels: a list of at least two")
        if len({label.strip().lower() for label in self.labels}) != len(self.labels):
            raise ValueError("labels repeats a label (case is ignored)")
        if self.invalid_label in self.labels:
            raise ValueError("invalid_label must not be one of labels")
        return self


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


@register
class Classification(Kind):
    """``label``: the answer as one of ``labels``, or ``invalid_label``."""

    name = "classification"
    Config = ClassificationConfig
    columns: ClassVar[dict[str, pa.DataType]] = {"label": pa.string()}
    config: ClassificationConfig

    def output(self, chunk: Chunk) -> dict[str, Any]:
        """The label of every answered row (null where the row has no answer)."""
        found = normalized_labels(chunk.answers["answer"], self.config.labels or [])
        label = pc.fill_null(found, self.config.invalid_label)
        out = pc.if_else(chunk.done, label, pa.scalar(None, pa.string()))
        return {"label": out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out}

    def report(self, table: pa.Table, output: pa.Table) -> dict[str, Any]:
        """Label counts and, with a gold column, accuracy, F1 and the confusion matrix."""
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

    @classmethod
    def markdown(cls, report: dict[str, Any]) -> list[str]:
        """Accuracy, per-label metrics and the confusion matrix."""
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
        gold = report.get("gold")
        if not gold:
            return None
        return [{"label": label, **m} for label, m in gold["per_label"].items()]
