"""The kind seam is real: a kind written here, in a test, and registered here, runs end to end
through the real flow (real Prefect engine, real local server) without a pipeline module
knowing it. It adds a config key, a body field, two typed output columns, a verdict whose
invalid answers are retried, and a report section."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from flows.job import batch_job
from tablebatch.jobs.kinds import KINDS, Chunk, Kind, register
from tablebatch.jobs.report import summary_text
from tablebatch.jobs.schema import JobConfig


class EchoConfig(JobConfig):
    """The toy kind's config: one key of its own."""

    kind: Literal["echo"]
    min_words: int = 1


class Echo(Kind):
    """Counts an answer's words and shouts it; an answer shorter than ``min_words`` is
    invalid and is sent again."""

    name = "echo"
    Config = EchoConfig
    columns: ClassVar[dict[str, pa.DataType]] = {"words": pa.int32(), "loud": pa.string()}
    retry_invalid = True
    config: EchoConfig

    def body(self) -> dict[str, Any]:
        return {"user": "echo-kind"}

    def check_answers(self, answers: pa.Array) -> pa.Array:
        words = pc.list_value_length(pc.utf8_split_whitespace(answers))
        short = pc.less(words, self.config.min_words)
        return pc.if_else(short, f"fewer than {self.config.min_words} words", None)

    def output(self, chunk: Chunk) -> dict[str, Any]:
        texts = chunk.answers["answer"]
        words = pc.list_value_length(pc.utf8_split_whitespace(texts))
        return {"words": words, "loud": pc.utf8_upper(texts)}

    def report(self, table: pa.Table, output: pa.Table) -> dict[str, Any]:
        return {"echo": {"words": pc.sum(output["words"]).as_py() or 0}}

    @classmethod
    def summary(cls, report: dict[str, Any]) -> list[str]:
        return [f"  echo: {report['echo']['words']} words"]


register(Echo)


def _config(name: str, **extra: object) -> dict:
    return {
        "name": name,
        "kind": "echo",
        "input": {"path": "data/notes.csv", "id_column": "id"},
        "prompt": {"template": "Repeat: {text}"},
        "model": "grok-4",
        "batch": {"max_requests": 3, "max_attempts": 2},
        **extra,
    }


NOTES = "id,text\n" + "".join(f"n{i},note number {i} is here\n" for i in range(7))


def test_a_kind_registered_in_a_test_runs_through_the_real_flow(project, tmp_path) -> None:
    assert "echo" in KINDS
    config = project(_config("echo-job", min_words=2), {"data/notes.csv": NOTES})
    report = batch_job(str(config))

    out = pq.read_table(tmp_path / "data/output/echo-job.parquet")
    assert out.column_names[-2:] == ["words", "loud"]
    assert out.schema.field("words").type == pa.int32()
    assert out.column("status").to_pylist() == ["completed"] * 7
    assert out.column("loud").to_pylist() == [a.upper() for a in out.column("answer").to_pylist()]
    assert report["echo"]["words"] == sum(out.column("words").to_pylist()) > 0
    assert "echo: " in summary_text(report)
    saved = json.loads(
        Path(str(tmp_path / "data/output/echo-job.parquet") + ".report.json").read_text()
    )
    assert saved["echo"] == report["echo"]
    with sqlite3.connect(tmp_path / ".tablebatch/server.db") as db:
        bodies = [json.loads(b) for (b,) in db.execute("SELECT body FROM requests")]
    assert len(bodies) == 7 and all(b["user"] == "echo-kind" for b in bodies)  # the body field


def test_invalid_answers_are_retried_then_kept_invalid_with_the_reason(project, tmp_path) -> None:
    config = project(_config("echo-strict", min_words=1000), {"data/notes.csv": NOTES})
    report = batch_job(str(config))

    out = pq.read_table(tmp_path / "data/output/echo-strict.parquet")
    assert report["rows_by_status"] == {"invalid": 7}
    assert set(out.column("error").to_pylist()) == {"fewer than 1000 words"}
    assert out.column("attempts").to_pylist() == [2] * 7  # sent again once, then given up
    assert (report["requests"]["sent"], report["requests"]["found"]) == (14, 0)
    again = batch_job(str(config))  # a re-run finds both attempts' batches: nothing is paid again
    # a re-run: each request was tried max_attempts times already; none is paid for again
    assert (again["requests"]["sent"], again["requests"]["found"]) == (0, 7)
