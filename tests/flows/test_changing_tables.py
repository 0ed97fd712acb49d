"""A table that changes between runs: each run sends exactly the requests that have no answer
on the API yet, ends well, and writes what a fresh run of the final table writes (under
another job name, on the same server), but for the batches the answers came from.

Rows, in the tests below, are reviews of several shards (``max_requests`` small), changed
as a data team's table changes: rows inserted at the start, re-sorted, appended to again
and again, edited, deleted, and repeated."""

from __future__ import annotations

import random
import shutil
import sqlite3
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml

from flows.job import batch_job

WORDS = ["great", "terrible", "fine", "broken", "lovely", "useless", "solid", "flimsy"]
SAME = [c for c in ("status", "answer", "label", "request_id", "shared_with", "error")]


def review(i: int, edit: str = "") -> dict[str, str]:
    return {"id": f"r{i:05d}", "text": f"Review {i}{edit}: {WORDS[i % 8]} and {WORDS[i * 5 % 8]}"}


class Job:
    """A project with a job over ``data/reviews.csv`` that a test rewrites between runs."""

    def __init__(self, root: Path, shards: int = 10) -> None:
        self.root = root
        (root / "data").mkdir(parents=True, exist_ok=True)
        (root / "configs").mkdir(exist_ok=True)
        (root / "pyproject.toml").write_text("")
        self.shards = shards

    def config(self, name: str, max_requests: int) -> Path:
        path = self.root / "configs" / f"{name}.yaml"
        data = {
            "name": name,
            "kind": "classification",
            "input": {"path": "data/reviews.csv", "id_column": "id"},
            "prompt": {"template": "Is this review positive or negative?\n\n{text}"},
            "model": "grok-4",
            "labels": ["positive", "negative"],
            "batch": {"max_requests": max_requests},
            "output": {"path": f"data/output/{name}.parquet"},
        }
        path.write_text(yaml.safe_dump(data))
        return path

    def write(self, rows: list[dict[str, str]]) -> None:
        table = pa.table({"id": [r["id"] for r in rows], "text": [r["text"] for r in rows]})
        pacsv.write_csv(table, self.root / "data/reviews.csv")

    def requests_on_server(self) -> int:
        with sqlite3.connect(self.root / ".tablebatch/server.db") as db:
            return db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]

    def run(self, name: str = "reviews", max_requests: int | None = None) -> tuple[dict, int]:
        """Run the job; returns its report and the requests the server received."""
        before = self.requests_on_server() if (self.root / ".tablebatch/server.db").exists() else 0
        rows = len(pacsv.read_csv(self.root / "data/reviews.csv"))
        size = max_requests or max(1, -(-rows // self.shards))
        report = batch_job(str(self.config(name, size)))
        return report, self.requests_on_server() - before

    def output(self, name: str = "reviews") -> pa.Table:
        return pq.read_table(self.root / f"data/output/{name}.parquet")

    def check_as_fresh(self, name: str = "reviews") -> None:
        """The output equals a fresh run's of the same table under another job name."""
        fresh_name = f"fresh-{random.Random(len(name)).randrange(10**6)}"
        fresh, _ = self.run(fresh_name)
        assert fresh["rows_by_status"] == {"completed": fresh["output_rows"]}
        ours, theirs = self.output(name), self.output(fresh_name)
        assert ours.column("id").equals(theirs.column("id"))
        for column in SAME:
            assert ours.column(column).equals(theirs.column(column)), column


@pytest.fixture
def job(tmp_path: Path) -> Job:
    return Job(tmp_path)


def test_rows_inserted_at_the_start_send_only_themselves(job: Job) -> None:
    rows = [review(i) for i in range(200)]
    job.write(rows)
    first, sent = job.run()
    assert sent == 200 and first["requests"]["sent"] == 200
    for shards in (2, 20):  # the new rows shift every shard boundary
        new = [review(10_000 + shards * 10 + i) for i in range(4)]
        rows = new + rows
        job.write(rows)
        job.shards = shards
        report, sent = job.run()
        assert sent == 4 and report["requests"] == {
            "sent": 4,
            "found": len(rows) - 4,
            "shared_rows": 0,
            "distinct": len(rows),
        }
        assert report["rows_by_status"] == {"completed": len(rows)}
    job.check_as_fresh()


def test_a_resorted_table_sends_nothing_however_it_is_sharded(job: Job) -> None:
    rows = [review(i) for i in range(240)]
    job.write(rows)
    job.run()
    for shards in (1, 20, 7):
        random.Random(shards).shuffle(rows)
        job.write(rows)
        job.shards = shards
        report, sent = job.run()
        assert sent == 0 and report["requests"]["sent"] == 0
        assert report["rows_by_status"] == {"completed": 240}
        assert job.output().column("id").to_pylist() == [r["id"] for r in rows]  # input order
    job.check_as_fresh()


def test_ten_appends_in_a_row_each_send_only_the_new_rows(job: Job) -> None:
    rows = [review(i) for i in range(100)]
    job.write(rows)
    job.run()
    for n in range(10):
        new = [review(1000 + 10 * n + i) for i in range(3 + n % 2)]
        rows += new
        job.write(rows)
        report, sent = job.run()
        assert sent == len(new) == report["requests"]["sent"], n
        assert report["rows_by_status"] == {"completed": len(rows)}, n
    job.check_as_fresh()


def test_edited_text_is_sent_again_and_its_old_answer_not_used(job: Job) -> None:
    rows = [review(i) for i in range(150)]
    job.write(rows)
    job.run()
    before = {r["id"]: r for r in job.output().select(["id", "request_id"]).to_pylist()}
    edited = [3, 77, 140]
    rows = [review(i, " (edited)") if i in edited else r for i, r in enumerate(rows)]
    job.write(rows)
    report, sent = job.run()
    assert sent == len(edited) and report["requests"]["found"] == 150 - len(edited)
    after = {r["id"]: r for r in job.output().select(["id", "request_id"]).to_pylist()}
    changed = {k for k in after if after[k]["request_id"] != before[k]["request_id"]}
    assert changed == {f"r{i:05d}" for i in edited}
    job.check_as_fresh()


def test_deleted_rows_are_simply_absent(job: Job) -> None:
    rows = [review(i) for i in range(160)]
    job.write(rows)
    job.run()
    rows = [r for i, r in enumerate(rows) if i % 9]
    job.write(rows)
    report, sent = job.run()
    assert sent == 0 and report["output_rows"] == len(rows)
    job.check_as_fresh()


def test_identical_requests_are_sent_once_and_shared(job: Job) -> None:
    distinct = [review(i) for i in range(70)]
    rows = distinct + [{"id": f"d{i:05d}", "text": distinct[i % 70]["text"]} for i in range(30)]
    random.Random(3).shuffle(rows)
    job.write(rows)
    report, sent = job.run()
    assert sent == 70 and report["requests"]["distinct"] == 70
    assert report["requests"]["shared_rows"] == 60  # 30 repeats and the 30 rows they repeat
    out = job.output()
    ids = out.column("id").to_pylist()
    shared = dict(zip(ids, out.column("shared_with").to_pylist(), strict=True))
    assert shared["d00005"] == 1 and shared["r00005"] == 1 and shared["r00050"] == 0
    answers = dict(zip(ids, out.column("answer").to_pylist(), strict=True))
    assert answers["d00005"] == answers["r00005"] is not None
    originals = out.filter(pa.compute.starts_with(out["id"], "r"))  # each request once
    assert report["tokens"]["prompt"] == pa.compute.sum(originals["prompt_tokens"]).as_py()
    job.check_as_fresh()


def test_a_rerun_reads_ended_batches_from_its_cache_and_a_fresh_machine_from_the_api(
    job: Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tablebatch.jobs.submit as submit

    api_reads: list[str] = []
    read = submit._every_result

    def counted(client, batch):  # type: ignore[no-untyped-def]
        api_reads.append(batch.id)
        return read(client, batch)

    monkeypatch.setattr(submit, "_every_result", counted)
    rows = [review(i) for i in range(100)]
    job.write(rows)
    job.run()
    assert len(api_reads) == 10  # each shard's batch, read once from the API
    first = job.output()
    rows += [review(500 + i) for i in range(3)]
    job.write(rows)
    api_reads.clear()
    report, sent = job.run()
    # the ten earlier batches come from the cache; only the new shard's is read
    assert sent == 3 and report["requests"]["found"] == 100 and len(api_reads) == 1
    cached = job.output()
    # a fresh machine (no cache) lists the same batches and reads them from the API
    shutil.rmtree(job.root / ".tablebatch" / "results")
    api_reads.clear()
    report, sent = job.run()
    assert sent == 0 and len(api_reads) == 11
    assert job.output().equals(cached)
    assert cached.slice(0, 100).column("answer").equals(first.column("answer"))
    # a cache file that no longer describes its batch is not trusted
    victim = next((job.root / ".tablebatch" / "results" / "reviews").glob("*.parquet"))
    victim.write_bytes(b"torn")
    api_reads.clear()
    job.run()
    assert len(api_reads) == 1 and job.output().equals(cached)
