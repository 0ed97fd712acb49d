"""The crash matrix: SIGKILL a run at each crash point, run it again on a "new machine"
(none of the first run's local files, only the API's state), and check that every row
is in the output once and the API received every request once.

Every crash point runs against the seed's API. Each provider's dialect (the local server
speaking it) is killed at the one point where it differs most from the seed: each case
costs two runs of ~10-20 s on a shared 2-core machine, and the other points exercise code
the dialects share with the seed (a plain re-run of every dialect is in test_dialects.py).
For Anthropic, whose batches have no name, "the API's state" includes the ledger in
``.tablebatch/``."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from prefect.settings import PREFECT_API_URL

from tablebatch.crash import POINTS

# Per dialect, every point it passes through. xAI adds as the seed does; OpenAI and
# Anthropic send a batch in one call (nothing is sent before it, so no "mid-add"), and
# "created-unrecorded" is the moment the provider has the batch and the run has not yet
# recorded it (found again by its metadata name; adopted from the ledger's intent).
DIALECT_POINTS = [
    *[("xai", point) for point in POINTS],
    *[
        (provider, point)
        for provider in ("openai", "anthropic")
        for point in ("created-unrecorded", "polling", "collecting", "writing")
    ],
]

ROWS = 2500  # three add calls of 1000 and three result pages of 1000


def _project(root: Path, provider: str = "seed") -> Path:
    (root / "data").mkdir(parents=True)
    (root / "pyproject.toml").write_text("")
    words = ["great", "terrible", "fine", "broken", "lovely", "useless"]
    lines = ["id,text"] + [
        f"r{i:05d},Review {i}: {words[i % 6]} and {words[(i * 7) % 6]}" for i in range(ROWS)
    ]
    (root / "data/reviews.csv").write_text("\n".join(lines) + "\n")
    config = {
        "name": "crash",
        "kind": "classification",
        "input": {"path": "data/reviews.csv", "id_column": "id"},
        "prompt": {"template": "Is this review positive or negative?\n\n{text}"},
        "model": "grok-4",
        "labels": ["positive", "negative"],
        "output": {"path": "data/output/crash.parquet"},
    }
    if provider != "seed":
        config["api"] = {"provider": provider, "base_url": "local"}
    (root / "configs").mkdir()
    (root / "configs/crash.yaml").write_text(yaml.safe_dump(config))
    return root


def _run(root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "configs/crash.yaml"],
        cwd=root,
        env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _crash(machine: Path, point: str, next_machine: Path, provider: str = "seed") -> Path:
    """Kill a run of ``machine`` at ``point``; returns another machine holding only the
    API's state (the local server's database; the ledger, for Anthropic)."""
    slow = {"TABLEBATCH_SERVER_FAULTS__PROCESSING_DELAY_S": "0.5"} if point == "polling" else {}
    crashed = _run(machine, TABLEBATCH_CRASH_AT=point, **slow)
    assert crashed.returncode == -9, crashed.stderr[-2000:]  # SIGKILL, mid-run
    assert not (machine / "data/output/crash.parquet").exists()
    fresh = _project(next_machine, provider)
    shutil.copytree(machine / ".tablebatch", fresh / ".tablebatch")
    return fresh


@pytest.mark.parametrize("point", POINTS)
def test_a_killed_run_resumes_without_loss_or_duplicates(tmp_path: Path, point: str) -> None:
    second = _crash(_project(tmp_path / "machine-1"), point, tmp_path / "machine-2")
    _finish(second)


@pytest.mark.parametrize(("provider", "point"), DIALECT_POINTS)
def test_a_killed_run_resumes_in_every_dialect(tmp_path: Path, provider: str, point: str) -> None:
    first = _project(tmp_path / "machine-1", provider)
    _finish(_crash(first, point, tmp_path / "machine-2", provider))


def _finish(second: Path, batches: int = 1) -> None:
    """Run the job to its end and check: every row once, every request sent once, in
    ``batches`` batches."""
    rerun = _run(second)
    assert rerun.returncode == 0, rerun.stderr[-3000:]

    output = pq.read_table(second / "data/output/crash.parquet")
    assert output.column("id").to_pylist() == [f"r{i:05d}" for i in range(ROWS)]
    assert set(output.column("status").to_pylist()) == {"completed"}
    with sqlite3.connect(second / ".tablebatch/server.db") as db:
        sent = db.execute("SELECT COUNT(*), COUNT(DISTINCT custom_id) FROM requests").fetchone()
        found = db.execute("SELECT status, request_count FROM batches").fetchall()
    assert sent == (ROWS, ROWS)  # every request received exactly once
    ended = [b for b in found if b[0] != "cancelled"]
    assert {b[0] for b in ended} == {"completed"} and len(ended) == batches
    assert sum(b[1] for b in ended) == ROWS


def test_a_killed_incremental_run_resumes_on_a_fresh_machine(tmp_path: Path) -> None:
    """The table grew since the last run; the run that sends the new rows is killed while
    adding them; a run on another machine sends only what the API has not received."""
    first = _project(tmp_path / "machine-1")
    (first / "data/reviews.csv").write_text(
        "\n".join((first / "data/reviews.csv").read_text().splitlines()[:1001]) + "\n"
    )
    assert _run(first).returncode == 0  # 1,000 rows answered
    grown = _project(tmp_path / "grown")  # the whole table: 1,500 rows more
    shutil.copy(grown / "data/reviews.csv", first / "data/reviews.csv")
    (first / "data/output/crash.parquet").unlink()  # so the crash is seen to write none
    second = _crash(first, "mid-add", tmp_path / "machine-2")
    _finish(second, batches=2)
