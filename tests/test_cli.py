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
