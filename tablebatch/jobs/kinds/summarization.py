"""Summarization: the answer is the summary; with a reference column, ROUGE against it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import pyarrow as pa

from tablebatch.jobs.kinds.base import Chunk, Kind, register
from tablebatch.jobs.metrics import mean, rouge, word_stats
from tablebatch.jobs.report_text import num
from tablebatch.jobs.schema import JobConfig
from tablebatch.jobs.text import text_values

ROUGE = ("rouge1", "rouge2", "rougeL")


class SummarizationConfig(JobConfig):
    """A summarization job (``reference_column``: optional reference summaries)."""

    kind: Literal["summarization"]


@register
class Summarization(Kind):
    """``summary`` (the answer, trimmed) and, with references, ``rouge1/2/L`` per row."""

    name = "summarization"
    Config = SummarizationConfig
    columns: ClassVar[dict[str, pa.DataType]] = {
        "summary": pa.string(),
        "rouge1": pa.float64(),
        "rouge2": pa.float64(),
        "rougeL": pa.float64(),
    }

    def output(self, chunk: Chunk) -> dict[str, Any]:
        """The summaries and, with a reference column, their ROUGE scores."""
        done = chunk.done.to_pylist()
        texts = chunk.answers["answer"].to_pylist()
        summaries = [
            t.strip() if ok and t is not None else None for t, ok in zip(texts, done, strict=True)
        ]
        out: dict[str, list[Any]] = {"summary": summaries}
        if self.config.reference_column:
            refs = text_values(chunk.rows[self.config.reference_column])
            scores = [
                rouge(s, r) if s is not None and r.strip() else None
                for s, r in zip(summaries, refs, strict=True)
            ]
            for name in ROUGE:
                out[name] = [s[name] if s else None for s in scores]
        return out

    def long_columns(self) -> Sequence[str]:
        """The summaries: the report keeps their word counts."""
        return ("summary",)

    def slim(self, chunk: pa.Table) -> dict[str, pa.Array]:
        """Each summary's word count."""
        words = [None if s is None else len(s.split()) for s in chunk["summary"].to_pylist()]
        return {"summary_words": pa.array(words, pa.int32())}

    def report(self, table: pa.Table, output: pa.Table) -> dict[str, Any]:
        """Summary lengths and, with references, mean ROUGE."""
        words = [w for w in output.column("summary_words").to_pylist() if w is not None]
        section: dict[str, Any] = {"summary_lengths": word_stats(words)}
        if self.config.reference_column:
            section["rouge"] = {name: mean(output.column(name).to_pylist()) for name in ROUGE}
        return section

    @classmethod
    def markdown(cls, report: dict[str, Any]) -> list[str]:
        """How many summaries, how long, and mean ROUGE."""
        s = report["summary_lengths"]
        lines = ["", f"Summaries: {s.get('count', 0)}, mean {s.get('mean_words', 0):.1f} words."]
        if report.get("rouge"):
            r = report["rouge"]
            lines.append("Mean ROUGE-1/2/L: " + " / ".join(num(r[k]) for k in ROUGE))
        return lines

    @classmethod
    def summary(cls, report: dict[str, Any]) -> list[str]:
        """Mean ROUGE-L."""
        if not report.get("rouge"):
            return []
        return ["  mean ROUGE-L " + f"{report['rouge']['rougeL'] or 0:.3f}"]
