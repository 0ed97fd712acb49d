"""Issue 14's table, measured: a job re-run on a table that changed since its last run.

Each scenario starts a project of its own (the local server, its own database), runs a
classification job over N synthetic reviews, changes the table as a data team's table
changes, and runs the job again (``python -m flows.cli run``, as a user runs it). Then
it runs a fresh job (another name) over the final table, on the same server, and
compares. Per scenario: the rows needing an answer (their request is new), the requests
the server received for the re-run(s), the exit codes, and whether the output is right
(every row ``completed``, each answer equal to the fresh run's).

Run it from the repository root, alone on the machine::

    flock /tmp/tablebatch-bench.lock .venv/bin/python benchmarks/changing_tables.py --rows 12000
"""

from __future__ import annotations

import argparse
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import yaml

WORDS = ["great", "terrible", "fine", "broken", "lovely", "useless", "solid", "flimsy"]
Rows = list[dict[str, str]]


def review(i: int, edit: str = "") -> dict[str, str]:
    return {"id": f"r{i:06d}", "text": f"Review {i}{edit}: {WORDS[i % 8]} and {WORDS[i * 5 % 8]}"}


class Project:
    """A project whose job a scenario re-runs over a table it rewrites."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "data").mkdir(parents=True)
        (root / "configs").mkdir()
        (root / "pyproject.toml").write_text("")

    def write(self, rows: Rows) -> None:
        table = pa.table({"id": [r["id"] for r in rows], "text": [r["text"] for r in rows]})
        pacsv.write_csv(table, self.root / "data/reviews.csv")

    def received(self) -> int:
        db = self.root / ".tablebatch/server.db"
        if not db.exists():
            return 0
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]

    def run(self, name: str, shards: int) -> tuple[int, int]:
        """Run job ``name`` in ``shards`` shards; its exit code and the requests sent."""
        rows = pacsv.read_csv(self.root / "data/reviews.csv").num_rows
        config = {
            "name": name,
            "kind": "classification",
            "input": {"path": "data/reviews.csv", "id_column": "id"},
            "prompt": {"template": "Is this review positive or negative?\n\n{text}"},
            "model": "grok-4",
            "labels": ["positive", "negative"],
            "batch": {"max_requests": max(1, -(-rows // shards))},
            "output": {"path": f"data/output/{name}.parquet"},
        }
        (self.root / "configs" / f"{name}.yaml").write_text(yaml.safe_dump(config))
        before = self.received()
        command = [sys.executable, "-m", "flows.cli", "run", f"configs/{name}.yaml", "--quiet"]
        done = subprocess.run(command, cwd=self.root, capture_output=True, text=True)
        if done.returncode not in (0, 1):
            print(done.stderr[-2000:], file=sys.stderr)
        return done.returncode, self.received() - before

    def right(self, name: str, fresh: str) -> bool:
        ours = pq.read_table(self.root / f"data/output/{name}.parquet")
        theirs = pq.read_table(self.root / f"data/output/{fresh}.parquet")
        statuses = set(ours.column("status").to_pylist())
        same = all(ours.column(c).equals(theirs.column(c)) for c in ("id", "answer", "label"))
        return statuses == {"completed"} and same


def scenario(
    work: Path, n: int, change: Callable[[Rows, Project], list[tuple[Rows, int]]], shards: int
) -> tuple[int, list[int], int, bool]:
    """Run the job over ``n`` rows, apply ``change`` (a list of tables to run in turn, with
    their shard counts), then a fresh run; (needing, sent per re-run, worst exit, right)."""
    project = Project(Path(tempfile.mkdtemp(dir=work)))
    rows = [review(i) for i in range(n)]
    project.write(rows)
    project.run("job", shards)
    asked = {r["text"] for r in rows}
    sent, codes = [], []
    for table, shard_count in change(rows, project):
        project.write(table)
        code, count = project.run("job", shard_count)
        sent.append(count)
        codes.append(code)
    final = table
    needing = len({r["text"] for r in final} - asked)
    project.run("fresh", shards)
    return needing, sent, max(codes), project.right("job", "fresh")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=12_000, help="rows first (default 12000)")
    args = p.parse_args(argv)
    n = args.rows
    one = n // 100
    rng = random.Random(14)

    def inserted(rows: Rows, _: Project, shards: int = 2) -> list[tuple[Rows, int]]:
        return [([review(10 * n + i) for i in range(one)] + rows, shards)]

    def resorted(rows: Rows, _: Project, shards: int = 2) -> list[tuple[Rows, int]]:
        return [(rng.sample(rows, len(rows)), shards)]

    def appends(rows: Rows, _: Project) -> list[tuple[Rows, int]]:
        out, table = [], list(rows)
        for k in range(3):
            table = table + [review(20 * n + k * one + i) for i in range(one // 3)]
            out.append((table, 2))
        return out

    def edited(rows: Rows, _: Project) -> list[tuple[Rows, int]]:
        picked = set(rng.sample(range(n), one))
        return [([review(i, " (edited)") if i in picked else r for i, r in enumerate(rows)], 2)]

    def deleted(rows: Rows, _: Project) -> list[tuple[Rows, int]]:
        gone = set(rng.sample(range(n), one))
        return [([r for i, r in enumerate(rows) if i not in gone], 2)]

    scenarios: list[tuple[str, Callable[[Rows, Project], list[tuple[Rows, int]]], int]] = [
        ("+1% rows inserted at the start, 2 shards", inserted, 2),
        ("+1% rows inserted at the start, 20 shards", lambda r, p: inserted(r, p, 20), 20),
        ("same rows, re-sorted", resorted, 2),
        ("same rows re-sorted, 20 shards", lambda r, p: resorted(r, p, 20), 20),
        ("three small appends in a row", appends, 2),
        ("text of 1% of rows edited, same ids", edited, 2),
        ("1% of rows deleted", deleted, 2),
    ]
    work = Path(tempfile.mkdtemp(prefix="tablebatch-changing-"))
    print(f"{n:,} rows first; the local server; each re-run with `tablebatch run`\n")
    print("| change since the last run | rows needing an answer | requests sent | output |")
    print("|---|---|---|---|")
    failed = False
    try:
        for title, change, shards in scenarios:
            needing, sent, code, right = scenario(work, n, change, shards)
            ok = right and code == 0 and sum(sent) == needing
            failed |= not ok
            said = "right" if right else "WRONG"
            print(
                f"| {title} | {needing:,} | {' + '.join(f'{s:,}' for s in sent)} | "
                f"exit {code}, {said} |",
                flush=True,
            )
        # 30% of rows repeat another row's text: one request per distinct text
        project = Project(Path(tempfile.mkdtemp(dir=work)))
        m = 10_000
        distinct = [review(i) for i in range(7_000)]
        rows = distinct + [
            {"id": f"d{i:06d}", "text": distinct[rng.randrange(7_000)]["text"]}
            for i in range(3_000)
        ]
        project.write(rows)
        code, sent = project.run("job", 4)
        project.run("fresh", 4)
        right = project.right("job", "fresh")
        failed |= not (right and code == 0 and sent == 7_000)
        print(
            f"| 30% of {m:,} rows repeat another row's text | 7,000 distinct | {sent:,} | "
            f"exit {code}, {'right' if right else 'WRONG'} |"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
