"""``tablebatch run`` in a real subprocess, against the session's Prefect server."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
from prefect.settings import PREFECT_API_URL

ROOT = Path(__file__).resolve().parents[2]


def _run(project: Path, *args: str, umask: int = 0o022) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: os.umask(umask),
    )


def test_run_the_sample_job(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    shutil.copytree(ROOT / "data", tmp_path / "data", ignore=shutil.ignore_patterns("output"))
    (tmp_path / "pyproject.toml").write_text("")
    result = _run(tmp_path, "review-sentiment", umask=0o002)  # a job's name, as status takes
    assert result.returncode == 0, result.stderr[-3000:]
    assert "review-sentiment: 24 rows (24 completed)" in result.stdout
    assert "accuracy" in result.stdout
    output = tmp_path / "data/output/review-sentiment.parquet"
    assert f"output: {output}" in result.stdout
    assert pq.read_table(output).num_rows == 24
    report = tmp_path / "data/output/review-sentiment.parquet.report.json"
    # the output table is as readable as the report: what the umask allows (not 0600)
    assert stat.S_IMODE(output.stat().st_mode) == 0o664
    assert stat.S_IMODE(report.stat().st_mode) == 0o664


def test_run_reports_bad_input_clearly(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    (tmp_path / "data").mkdir()
    (tmp_path / "data/reviews.csv").write_text("review_id,body\nr1,hello\n")
    (tmp_path / "pyproject.toml").write_text("")
    result = _run(tmp_path, "configs/review-sentiment.yaml", "--set", "batch.max_attempts=0")
    assert result.returncode == 2
    assert "batch.max_attempts: Input should be greater than or equal to 1" in result.stderr
    assert "Traceback" not in result.stderr
    result = _run(tmp_path, "configs/review-sentiment.yaml")
    assert result.returncode == 2
    assert "prompt.template names column 'text', which the table does not have" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / ".tablebatch").exists()  # nothing was sent: no server was started
