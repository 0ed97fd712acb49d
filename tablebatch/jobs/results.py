"""Joining answers back onto the rows, the per-kind columns, and the report.

Every input row appears exactly once per model, in input order, with its input
columns and the answer columns. Errors are data: a failed or skipped row has
its status and error, not a gap.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tablebatch.jobs.build import Plan, _texts, column_texts
from tablebatch.jobs.config import OUTPUT_COLUMNS, JobConfig
from tablebatch.jobs.metrics import (
    classification_metrics,
    evaluation_stats,
    mean,
    rouge,
    word_stats,
)
from tablebatch.jobs.scoring import judge_verdict, normalize_label, score_answer
from tablebatch.jobs.spool import Spool, text_column

KIND_COLUMNS = {
    "classification": ("label",),
    "summarization": ("summary", "rouge1", "rouge2", "rougeL"),
    "evaluation": ("model", "score", "judge_answer"),
}


@dataclass
class ModelAnswers:
    """The final result of every row for one model, after all attempts (Arrow tables with
    the columns of ``RESULT_SCHEMA`` plus ``attempts``; ``judged`` for a judge's verdicts)."""

    plan: Plan
    results: pa.Table
    judged: pa.Table | None = None
    spool: Spool | None = None  # where the texts of spooled results are

    def with_skipped(self) -> pa.Table:
        """The results and a row per skipped row (status ``skipped``, why in ``error``)."""
        results = self.results
        if not self.plan.skipped:
            return results
        n = len(self.plan.skipped)
        columns: dict[str, Any] = {
            "custom_id": pa.array(list(self.plan.skipped), pa.string()),
            "status": pa.array(["skipped"] * n, pa.string()),
            "error": pa.array(list(self.plan.skipped.values()), pa.string()),
        }
        extra = pa.table(
            {
                name: columns.get(name, pa.nulls(n, field.type))
                for name, field in zip(results.schema.names, results.schema, strict=True)
            }
        )
        for name in ("prompt_tokens", "completion_tokens", "attempts"):
            if name in extra.column_names:
                index = extra.schema.get_field_index(name)
                zeros = pa.array([0] * n, extra.schema.field(name).type)
                extra = extra.set_column(index, name, zeros)
        return pa.concat_tables([results, extra])


def _input_columns(table: pa.Table, config: JobConfig) -> pa.Table:
    """The input columns, renamed ``<name>_input`` where they collide with ours."""
    ours = set(OUTPUT_COLUMNS) | set(KIND_COLUMNS[config.kind])
    names = [f"{n}_input" if n in ours else n for n in table.column_names]
    return table.rename_columns(names)


def _answer_columns(answers: ModelAnswers, results: pa.Table, position: pa.Array) -> pa.Table:
    """The answer columns of some input rows: ``position`` is each row's index among
    ``results`` (null for a row with no result), so this is one take, no sort."""
    joined = results.take(position)
    lost = pc.is_null(joined["status"])
    columns = {
        "answer": text_column(joined, "answer", answers.spool),
        "status": pc.if_else(lost, "failed", joined["status"]),
        "error": pc.if_else(lost, "no result was collected for this row", joined["error"]),
        "batch_id": text_column(joined, "batch_id", answers.spool),
        "attempts": pc.fill_null(joined["attempts"], 0).cast(pa.int32()),
        "prompt_tokens": pc.fill_null(joined["prompt_tokens"], 0),
        "completion_tokens": pc.fill_null(joined["completion_tokens"], 0),
    }
    return pa.table(columns)


def _labels(answers: pa.ChunkedArray | pa.Array, done: Any, config: JobConfig) -> pa.Array:
    """``label``: the answer normalised to one of the labels, or the invalid label (null
    where the row has no answer).

    Answers that are a label up to case and surrounding punctuation are matched in
    Arrow; only the others go through ``normalize_label`` in Python."""
    labels = config.labels or []
    found = normalized_labels(answers, labels)
    out = pc.if_else(done, pc.fill_null(found, config.invalid_label), pa.scalar(None, pa.string()))
    return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out


def normalized_labels(texts: pa.ChunkedArray | pa.Array, labels: list[str]) -> pa.Array:
    """``normalize_label`` of every text, null where none: the plain cases in Arrow, the
    rest (a label inside a sentence, say) in Python."""
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


def _kind_columns(
    table: pa.Table,
    config: JobConfig,
    answers: ModelAnswers,
    base: pa.Table,
    custom_ids: pa.Array,
    verdicts: dict[str, str | None] | None = None,
) -> dict[str, Any]:
    """The columns of the job's kind for these rows (``table``: their input rows)."""
    done_mask = pc.equal(base["status"], "completed")
    if config.kind == "classification":
        return {"label": _labels(base["answer"], done_mask, config)}
    done = done_mask.to_pylist()
    texts = base["answer"].to_pylist()
    if config.kind == "summarization":
        summaries = [
            t.strip() if ok and t is not None else None for t, ok in zip(texts, done, strict=True)
        ]
        out: dict[str, list[Any]] = {"summary": summaries}
        if config.reference_column:
            refs = column_texts(table, config.reference_column)
            scores = [
                rouge(s, r) if s is not None and r.strip() else None
                for s, r in zip(summaries, refs, strict=True)
            ]
            for name in ("rouge1", "rouge2", "rougeL"):
                out[name] = [s[name] if s else None for s in scores]
        return out
    refs = column_texts(table, config.reference_column or "")
    if config.scoring == "judge" and config.judge is not None:
        verdicts = verdicts or {}
        judge_texts = [verdicts.get(c) for c in custom_ids.to_pylist()]
        scores = [
            judge_verdict(j, config.judge.pass_labels, config.judge.fail_labels) if ok else None
            for j, ok in zip(judge_texts, done, strict=True)
        ]
    else:
        judge_texts = [None] * len(texts)
        scores = [
            score_answer(t, r, config.scoring) if ok else None
            for t, r, ok in zip(texts, refs, done, strict=True)
        ]
    return {
        "model": [answers.plan.model] * len(texts),
        "score": scores,
        "judge_answer": judge_texts,
    }


_TYPES = {
    "answer": pa.string(),
    "status": pa.string(),
    "error": pa.string(),
    "batch_id": pa.string(),
    "attempts": pa.int32(),
    "prompt_tokens": pa.int64(),
    "completion_tokens": pa.int64(),
    "label": pa.string(),
    "summary": pa.string(),
    "rouge1": pa.float64(),
    "rouge2": pa.float64(),
    "rougeL": pa.float64(),
    "model": pa.string(),
    "score": pa.float64(),
    "judge_answer": pa.string(),
}


JOIN_ROWS = 50_000  # input rows joined and written at a time


def _verdicts(answers: ModelAnswers) -> dict[str, str | None]:
    """The judge's answer per custom_id (None where the judge failed)."""
    judged = answers.judged
    if judged is None:
        return {}
    texts = text_column(judged, "answer", answers.spool).to_pylist()
    ok = [s == "completed" for s in judged["status"].to_pylist()]
    ids = judged["custom_id"].to_pylist()
    return {c: t if good else None for c, t, good in zip(ids, texts, ok, strict=True)}


def join_chunks(
    table: pa.Table,
    config: JobConfig,
    per_model: Sequence[ModelAnswers],
    rows: int = JOIN_ROWS,
) -> Iterator[pa.Table]:
    """The output table a chunk of input rows at a time: input columns + answer columns,
    one row per input row and model, in input order. Spooled answers are read back
    chunk by chunk, so the whole output is never in memory."""
    inputs = _input_columns(table, config)
    prepared = []
    for answers in per_model:
        results = answers.with_skipped()
        position = pc.index_in(answers.plan.custom_ids, value_set=results["custom_id"])
        verdicts = _verdicts(answers) if config.scoring == "judge" else None
        prepared.append((answers, results, position, verdicts))
    for start in range(0, max(table.num_rows, 1), rows):
        parts = []
        for answers, results, position, verdicts in prepared:
            base = _answer_columns(answers, results, position.slice(start, rows))
            custom_ids = answers.plan.custom_ids.slice(start, rows)
            extra = _kind_columns(
                table.slice(start, rows), config, answers, base, custom_ids, verdicts
            )
            part = inputs.slice(start, rows)
            for name in base.column_names:
                part = part.append_column(name, base[name].cast(_TYPES[name]))
            for name, values in extra.items():
                if isinstance(values, pa.Array | pa.ChunkedArray):
                    column = values.cast(_TYPES[name])
                else:
                    column = pa.array(values, type=_TYPES[name])
                part = part.append_column(name, column)
            parts.append(part)
        if len(parts) == 1:
            yield parts[0]
            continue
        n = parts[0].num_rows
        order = [k * n + i for i in range(n) for k in range(len(parts))]
        yield pa.concat_tables(parts).take(pa.array(order, pa.int64()))


def join(table: pa.Table, config: JobConfig, per_model: Sequence[ModelAnswers]) -> pa.Table:
    """The whole output table at once (``join_chunks`` joined)."""
    return pa.concat_tables(list(join_chunks(table, config, per_model)))


REPORT_DROPS = ("answer", "error", "batch_id", "judge_answer")  # texts the report needs not


def report_columns(chunk: pa.Table) -> pa.Table:
    """What the report needs of an output chunk: the output columns but no long text (a
    summary becomes its word count), so that a million rows of it stay small."""
    keep = [n for n in chunk.column_names if n in _TYPES]
    slim = chunk.select([n for n in keep if n not in REPORT_DROPS and n != "summary"])
    if "summary" in chunk.column_names:
        words = pa.array(
            [None if s is None else len(s.split()) for s in chunk["summary"].to_pylist()],
            pa.int32(),
        )
        slim = slim.append_column("summary_words", words)
    return slim


# -- the report --------------------------------------------------------------------


def _counts(column: pa.ChunkedArray) -> dict[Any, int]:
    """How often each value occurs (nulls left out), counted in Arrow."""
    return {
        c["values"]: c["counts"]
        for c in pc.value_counts(column).to_pylist()
        if c["values"] is not None
    }


def build_report(
    config: JobConfig,
    table: pa.Table,
    output: pa.Table,
    batches: list[dict[str, Any]],
    output_path: str,
) -> dict[str, Any]:
    """Counts, tokens, batches, attempts and the per-kind metrics of a finished run."""
    report: dict[str, Any] = {
        "job": config.name,
        "kind": config.kind,
        "models": config.model_names,
        "output": output_path,
        "input_rows": table.num_rows,
        "output_rows": output.num_rows,
        "rows_by_status": _counts(output.column("status")),
        "tokens": {
            "prompt": pc.sum(output.column("prompt_tokens")).as_py() or 0,
            "completion": pc.sum(output.column("completion_tokens")).as_py() or 0,
        },
        "attempts": {str(k): v for k, v in sorted(_counts(output.column("attempts")).items())},
        "batches": batches,
    }
    if config.kind == "classification":
        report["labels"] = _counts(output.column("label"))
        if config.gold_column:
            report["gold"] = _gold_metrics(config, table, output)
    elif config.kind == "summarization":
        if "summary_words" in output.column_names:
            words = [w for w in output.column("summary_words").to_pylist() if w is not None]
        else:
            words = [len(s.split()) for s in output.column("summary").to_pylist() if s is not None]
        report["summary_lengths"] = word_stats(words)
        if config.reference_column:
            report["rouge"] = {
                name: mean(output.column(name).to_pylist())
                for name in ("rouge1", "rouge2", "rougeL")
            }
    else:
        models = output.column("model").to_pylist()
        scores = output.column("score").to_pylist()
        report["scoring"] = config.scoring
        report["per_model"] = {
            model: evaluation_stats([s for m, s in zip(models, scores, strict=True) if m == model])
            for model in config.model_names
        }
    return report


def _gold_metrics(config: JobConfig, table: pa.Table, output: pa.Table) -> dict[str, Any]:
    """Accuracy, F1 and the confusion matrix of the answered rows against the gold column
    (gold values are normalised to the labels as answers are; rows whose gold is none of
    the labels are counted, not scored)."""
    labels = config.labels or []
    gold = normalized_labels(pc.fill_null(_texts(table[config.gold_column or ""]), ""), labels)
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


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def report_markdown(report: dict[str, Any]) -> str:
    """The report as markdown, for the Prefect artifact and the terminal."""
    lines = [
        f"# {report['job']} ({report['kind']})",
        "",
        f"Output: `{report['output']}` — {report['output_rows']} rows from "
        f"{report['input_rows']} input rows.",
        "",
        "| status | rows |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in sorted(report["rows_by_status"].items())],
        "",
        f"Tokens: {report['tokens']['prompt']} prompt, {report['tokens']['completion']} "
        f"completion. Attempts: "
        + ", ".join(f"{v} row(s) in {k}" for k, v in report["attempts"].items())
        + f". Batches: {len(report['batches'])}.",
    ]
    gold = report.get("gold")
    if gold:
        lines += [
            "",
            f"## Against `{gold['gold_column']}` ({gold['scored_rows']} rows)",
            "",
            f"Accuracy {_pct(gold['accuracy'])}, macro-F1 {_pct(gold['macro_f1'])}, "
            f"invalid answers {gold['invalid_answers']}.",
            "",
            "| label | precision | recall | F1 | support |",
            "|---|---|---|---|---|",
            *[
                f"| {label} | {_pct(m['precision'])} | {_pct(m['recall'])} | {_pct(m['f1'])} "
                f"| {m['support']} |"
                for label, m in gold["per_label"].items()
            ],
            "",
            "Confusion matrix (rows: gold, columns: answer):",
            "",
            "| gold \\ answer | " + " | ".join(gold["confusion_matrix"]["labels"]) + " |",
            "|---" * (len(gold["confusion_matrix"]["labels"]) + 1) + "|",
            *[
                f"| {g} | " + " | ".join(str(v) for v in row.values()) + " |"
                for g, row in gold["confusion_matrix"]["rows"].items()
            ],
        ]
    if "summary_lengths" in report:
        s = report["summary_lengths"]
        lines += ["", f"Summaries: {s.get('count', 0)}, mean {s.get('mean_words', 0):.1f} words."]
        if report.get("rouge"):
            r = report["rouge"]
            lines.append(
                "Mean ROUGE-1/2/L: "
                + " / ".join(_num(r[k]) for k in ("rouge1", "rouge2", "rougeL"))
            )
    if "per_model" in report:
        lines += [
            "",
            f"## Scores ({report['scoring']})",
            "",
            "| model | mean score | pass rate | scored | unscored |",
            "|---|---|---|---|---|",
            *[
                f"| {model} | {_num(m['mean_score'])} | {_pct(m['pass_rate'])} | {m['scored']} "
                f"| {m['unscored']} |"
                for model, m in report["per_model"].items()
            ],
        ]
    return "\n".join(lines) + "\n"
