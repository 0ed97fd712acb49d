"""Generation: free text — a translation, a rewrite, anything. The answer goes to
``output_column``; with a ``reference_column``, each row gets chrF and BLEU (sacrebleu,
on its 0–100 scale) and ROUGE-1/2/L (0–1), and the report their means."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, model_validator

from tablebatch.jobs.kinds.base import Chunk, Kind, register
from tablebatch.jobs.metrics import mean, rouge, word_stats
from tablebatch.jobs.report_text import num
from tablebatch.jobs.rows import OUTPUT_COLUMNS
from tablebatch.jobs.schema import JobConfig
from tablebatch.jobs.text import text_values

SCORES = ("chrf", "bleu", "rouge1", "rouge2", "rougeL")


def sentence_scores(text: str, reference: str) -> dict[str, float]:
    """chrF and BLEU (sacrebleu's sentence scores) and ROUGE of one answer."""
    from sacrebleu.metrics import BLEU, CHRF

    return {
        "chrf": CHRF().sentence_score(text, [reference]).score,
        "bleu": BLEU(effective_order=True).sentence_score(text, [reference]).score,
        **rouge(text, reference),
    }


class GenerationConfig(JobConfig):
    """A generation job: the answer goes to ``output_column``."""

    kind: Literal["generation"]
    output_column: str = Field("answer", description="generation: the column of the answer.")

    @model_validator(mode="after")
    def _check_column(self) -> GenerationConfig:
        taken = (set(OUTPUT_COLUMNS) - {"answer"}) | set(SCORES)
        if self.output_column in taken or not self.output_column.strip():
            raise ValueError(
                f"output_column {self.output_column!r} is taken by an output column every "
                "generation job has; choose another name"
            )
        return self


@register
class Generation(Kind):
    """``output_column`` (unless it is ``answer`` itself) and, with references, the scores."""

    name = "generation"
    Config = GenerationConfig
    config: GenerationConfig

    def output_columns(self) -> dict[str, pa.DataType]:
        """The answer's own column, and the scores with a reference."""
        columns: dict[str, pa.DataType] = {}
        if self.config.output_column != "answer":
            columns[self.config.output_column] = pa.string()
        if self.config.reference_column:
            columns |= {name: pa.float64() for name in SCORES}
        return columns

    def output(self, chunk: Chunk) -> dict[str, Any]:
        """The answers (trimmed) and their scores against the references."""
        done = chunk.done.to_pylist()
        texts = chunk.answers["answer"].to_pylist()
        answers = [
            t.strip() if ok and t is not None else None for t, ok in zip(texts, done, strict=True)
        ]
        out: dict[str, list[Any]] = {}
        if self.config.output_column != "answer":
            out[self.config.output_column] = answers
        if self.config.reference_column:
            refs = text_values(chunk.rows[self.config.reference_column])
            scores = [
                sentence_scores(a, r) if a is not None and r.strip() else None
                for a, r in zip(answers, refs, strict=True)
            ]
            for name in SCORES:
                out[name] = [s[name] if s else None for s in scores]
        return out

    def long_columns(self) -> Sequence[str]:
        """The answers: the report keeps their word counts."""
        return (self.config.output_column,)

    def slim(self, chunk: pa.Table) -> dict[str, pa.Array]:
        """Each answer's word count."""
        texts = chunk[self.config.output_column].to_pylist()
        status = chunk["status"].to_pylist()
        words = [
            len(t.split()) if t is not None and s == "completed" else None
            for t, s in zip(texts, status, strict=True)
        ]
        return {"answer_words": pa.array(words, pa.int32())}

    def report(self, table: pa.Table, output: pa.Table) -> dict[str, Any]:
        """Answer lengths and, with references, the mean scores."""
        words = [w for w in output.column("answer_words").to_pylist() if w is not None]
        section: dict[str, Any] = {"answer_lengths": word_stats(words)}
        if self.config.reference_column:
            section["scores"] = {name: mean(output.column(name).to_pylist()) for name in SCORES}
            section["reference_column"] = self.config.reference_column
        return section

    @classmethod
    def markdown(cls, report: dict[str, Any]) -> list[str]:
        """How many answers, how long, and the mean scores."""
        s = report["answer_lengths"]
        lines = ["", f"Answers: {s.get('count', 0)}, mean {s.get('mean_words', 0):.1f} words."]
        if report.get("scores"):
            r = report["scores"]
            lines.append(
                f"Against `{report['reference_column']}`: mean chrF {num(r['chrf'])}, "
                f"BLEU {num(r['bleu'])} (0–100); ROUGE-1/2/L "
                + " / ".join(num(r[k]) for k in ("rouge1", "rouge2", "rougeL"))
            )
        return lines

    @classmethod
    def summary(cls, report: dict[str, Any]) -> list[str]:
        """The mean scores."""
        r = report.get("scores")
        if not r:
            return []

        def shown(value: float | None, spec: str) -> str:
            return "–" if value is None else format(value, spec)

        return [
            f"  mean chrF {shown(r['chrf'], '.1f')}, BLEU {shown(r['bleu'], '.1f')}, "
            f"ROUGE-L {shown(r['rougeL'], '.3f')} against {report['reference_column']}"
        ]

    @classmethod
    def table_rows(cls, report: dict[str, Any]) -> list[dict[str, Any]] | None:
        """The mean scores."""
        if not report.get("scores"):
            return None
        return [{"metric": k, "mean": v} for k, v in report["scores"].items()]
