"""The command line: the README's sample command runs a batch through a local server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_the_sample_through_the_local_server() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", "demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "POST /batches " in out and "-> processing" in out
    assert "24 results" in out
    assert "status: completed" in out
    assert "agreement with sentiment: 24/24" in out


def test_help_lists_the_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert "server" in result.stdout and "demo" in result.stdout
    assert all(command in result.stdout for command in ("status", "jobs", "cancel"))


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_validate_checks_configs_and_their_data(tmp_path: Path) -> None:
    ok = _cli("validate", *sorted(str(p) for p in (ROOT / "configs").glob("*.yaml")))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count("ok: ") == 3 and "rows in" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (ROOT / "configs/review-sentiment.yaml").read_text().replace("labels:", "lables:")
    )
    result = _cli("validate", str(bad), str(ROOT / "configs/quiz-eval.yaml"))
    assert result.returncode == 1
    assert f"{bad}: lables: unknown key (did you mean labels?)" in result.stderr
    assert "ok: " in result.stdout
    assert "Traceback" not in result.stderr


def test_plan_shows_what_would_be_sent_and_sends_nothing(tmp_path: Path) -> None:
    result = _cli(
        "plan", str(ROOT / "configs/review-sentiment.yaml"), "--set", "batch.max_requests=10"
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "24 rows" in out and "24 request(s), 0 skipped, 3 batch(es)" in out
    assert "prompt tokens" in out and "Nothing was sent." in out
    assert out.count("--a1--s000") == 3
