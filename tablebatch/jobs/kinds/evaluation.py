"""Evaluation: each model's answers scored against a reference column — exact, normalised,
contains, a regular expression, or a judge model reading each answer in a second batch
stage — and the models side by side in the report."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator, model_validator

from tablebatch.jobs.build import Renderer, Requests, Template, request_id
from tablebatch.jobs.kinds.base import Chunk, Kind, register
from tablebatch.jobs.metrics import evaluation_stats
from tablebatch.jobs.report_text import num, pct
from tablebatch.jobs.schema import JobConfig, Strict, template_fields
from tablebatch.jobs.scoring import judge_verdict, score_answer
from tablebatch.jobs.spool import text_column
from tablebatch.jobs.take import take
from tablebatch.jobs.text import text_values

if TYPE_CHECKING:
    from tablebatch.jobs.join import ModelAnswers

Scoring = Literal["exact", "normalized", "contains", "regex", "judge"]
JUDGE_FIELDS = {"prompt", "answer", "reference"}  # what a judge template may use beyond columns


class JudgeConfig(Strict):
    """A judge model for ``scoring: judge``: it reads each answer and gives a verdict."""

    model: str
    system: str | None = (
        "You grade answers against a reference. Reply with one of: correct, incorrect."
    )
    template: str = Field(
        "Question:\n{prompt}\n\nReference answer:\n{reference}\n\nCandidate answer:\n{answer}\n\n"
        "Is the candidate answer correct or incorrect?",
        description="Placeholders: {prompt}, {answer}, {reference} and any input column.",
    )
    pass_labels: list[str] = Field(["correct"], min_length=1)
    fail_labels: list[str] = Field(["incorrect"], min_length=1)
    max_tokens: int | None = Field(
        None,
        gt=0,
        description="The most tokens a verdict may take: what bounds the judge's cost under "
        "budget.max_cost (unset: the judge's requests carry no max_tokens).",
    )

    @field_validator("template")
    @classmethod
    def _check_template(cls, value: str) -> str:
        template_fields(value)
        return value


class EvaluationConfig(JobConfig):
    """An evaluation job: one model or several (``models``), a reference column, a scoring."""

    several_models = True

    kind: Literal["evaluation"]
    scoring: Scoring = "normalized"
    judge: JudgeConfig | None = None

    @model_validator(mode="after")
    def _check_scoring(self) -> EvaluationConfig:
        if not self.reference_column:
            raise ValueError("evaluation needs reference_column: the column with right answers")
        if self.scoring == "judge" and self.judge is None:
            raise ValueError("scoring: judge needs a judge section (model, template)")
        return self


class Judge:
    """The second stage of ``scoring: judge``: a request per answered row to the judge model,
    over the judge's template, named ``<custom_id>--m<k>`` for the k-th model's answers."""

    stage = "judge"

    def __init__(self, config: EvaluationConfig) -> None:
        assert config.judge is not None
        self.config = config
        self.judge = config.judge
        self.model = config.judge.model

    def fingerprint(self, answered_model: str) -> str:
        """The fingerprint of its requests about ``answered_model``'s answers."""
        return self.config.fingerprint(self.model, answered_model)

    @property
    def max_tokens(self) -> int | None:
        """The most completion tokens one verdict may take (None: nothing bounds it)."""
        return self.judge.max_tokens

    def requests(
        self, table: pa.Table, answers: ModelAnswers, index: int
    ) -> tuple[Requests, pa.Array]:
        """A request per answered row of the ``index``-th model (rows that ask the same,
        share one), and each row's request id."""
        template = Template(self.judge.template)
        columns = set(template_fields(self.judge.template)) - JUDGE_FIELDS
        custom_ids = answers.plan.custom_ids
        done = answers.results.filter(pc.equal(answers.results["status"], "completed"))
        rows = pc.indices_nonzero(pc.is_in(custom_ids, value_set=done["custom_id"]))
        texts = text_column(done, "answer", answers.spool).to_pylist()
        answered = dict(zip(done["custom_id"].to_pylist(), texts, strict=True))
        judged = take(table, rows)
        values = {c: text_values(judged[c]) for c in columns}
        references = text_values(judged[self.config.reference_column or ""])
        prompts = Renderer(self.config, answers.plan.model).prompts(judged)
        pairs: dict[str, bytes] = {}
        per_row: list[str | None] = [None] * table.num_rows
        for i, (at, custom_id) in enumerate(
            zip(rows.to_pylist(), custom_ids.take(rows).to_pylist(), strict=True)
        ):
            row = {c: values[c][i] for c in columns}
            row |= {
                "prompt": prompts[i],
                "answer": answered[custom_id] or "",
                "reference": references[i],
            }
            messages = [{"role": "user", "content": template.render(row)}]
            if self.judge.system:
                messages.insert(0, {"role": "system", "content": self.judge.system})
            ask: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": 0}
            if self.judge.max_tokens is not None:
                ask["max_tokens"] = self.judge.max_tokens
            body = orjson.dumps(ask)
            judge_id = request_id(body)
            per_row[at] = judge_id
            pairs.setdefault(
                judge_id, b'{"custom_id":"' + judge_id.encode() + b'","body":' + body + b"}"
            )
        return Requests.from_pairs(list(pairs.items())), pa.array(per_row, pa.string())


@register
class Evaluation(Kind):
    """One row per input row and model: ``model``, ``score`` (1/0 against the reference, or
    the judge's verdict) and ``judge_answer``."""

    name = "evaluation"
    Config = EvaluationConfig
    columns: ClassVar[dict[str, pa.DataType]] = {
        "model": pa.string(),
        "score": pa.float64(),
        "judge_answer": pa.string(),
    }
    config: EvaluationConfig

    def input_keys(self) -> list[tuple[str, str]]:
        """The input columns the judge's template reads."""
        if self.config.judge is None:
            return []
        extra = set(template_fields(self.config.judge.template)) - JUDGE_FIELDS
        return [("judge.template", c) for c in sorted(extra)]

    def stage_shape(self) -> dict[str, Any]:
        """The judge's settings and the reference shape the judge's requests."""
        if self.config.judge is None:
            return {}
        unset = {"max_tokens"} if self.config.judge.max_tokens is None else set()  # as before it
        judge = self.config.judge.model_dump(exclude=unset)
        return {"judge": judge, "reference": self.config.reference_column}

    def second_stage(self) -> Judge | None:
        """The judge, with ``scoring: judge``."""
        if self.config.scoring == "judge" and self.config.judge is not None:
            return Judge(self.config)
        return None

    def long_columns(self) -> tuple[str, ...]:
        """The judge's answers."""
        return ("judge_answer",)

    def output(self, chunk: Chunk) -> dict[str, Any]:
        """Each row's model, score and (with a judge) the judge's answer."""
        done = chunk.done.to_pylist()
        texts = chunk.answers["answer"].to_pylist()
        judge = self.config.judge
        if self.config.scoring == "judge" and judge is not None:
            judge_texts = chunk.second or [None] * len(texts)
            scores = [
                judge_verdict(j, judge.pass_labels, judge.fail_labels) if ok else None
                for j, ok in zip(judge_texts, done, strict=True)
            ]
        else:
            refs = text_values(chunk.rows[self.config.reference_column or ""])
            judge_texts = [None] * len(texts)
            scores = [
                score_answer(t, r, self.config.scoring) if ok else None
                for t, r, ok in zip(texts, refs, done, strict=True)
            ]
        return {"model": [chunk.model] * len(texts), "score": scores, "judge_answer": judge_texts}

    def report(self, table: pa.Table, output: pa.Table) -> dict[str, Any]:
        """Each model's mean score and pass rate."""
        models = output.column("model").to_pylist()
        scores = output.column("score").to_pylist()
        return {
            "scoring": self.config.scoring,
            "per_model": {
                model: evaluation_stats(
                    [s for m, s in zip(models, scores, strict=True) if m == model]
                )
                for model in self.config.model_names
            },
        }

    @classmethod
    def markdown(cls, report: dict[str, Any]) -> list[str]:
        """The models side by side."""
        return [
            "",
            f"## Scores ({report['scoring']})",
            "",
            "| model | mean score | pass rate | scored | unscored |",
            "|---|---|---|---|---|",
            *[
                f"| {model} | {num(m['mean_score'])} | {pct(m['pass_rate'])} | {m['scored']} "
                f"| {m['unscored']} |"
                for model, m in report["per_model"].items()
            ],
        ]

    @classmethod
    def summary(cls, report: dict[str, Any]) -> list[str]:
        """Each model's mean score."""
        lines = []
        for model, stats in report["per_model"].items():
            score = "–" if stats["mean_score"] is None else f"{stats['mean_score']:.3f}"
            lines.append(f"  {model}: mean score {score} over {stats['scored']} answers")
        return lines

    @classmethod
    def table_rows(cls, report: dict[str, Any]) -> list[dict[str, Any]] | None:
        """Each model's scores."""
        return [{"model": m, **v} for m, v in report["per_model"].items()]
