"""What ``tablebatch run`` shows: a live display on a terminal (a real pseudo-terminal),
plain lines in a pipe, ``--quiet`` and ``--verbose``; and a run with no Prefect API
configured, recorded on the temporary one. Real subprocesses of the CLI."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import shutil
import sqlite3
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from prefect.settings import PREFECT_API_URL

from flows.cli.display import ProgressDisplay, plain_line, time_left
from tablebatch.jobs.progress import AttemptProgress

ROOT = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
PROGRESS_LINE = re.compile(
    r"review-sentiment: answer grok-4, attempt 1: 24/24 ended; 24 sent, 24 answered, "
    r"0 failed; 0 batch\(es\) in flight; \d+:\d\d elapsed, done"
)


def _project(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    shutil.copytree(ROOT / "data", tmp_path / "data", ignore=shutil.ignore_patterns("output"))
    (tmp_path / "pyproject.toml").write_text("")
    return tmp_path


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), **extra}
    env.pop("NO_COLOR", None)
    return env


def _run(
    project: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "configs/review-sentiment.yaml", *args],
        cwd=project,
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def test_a_terminal_gets_a_display_redrawn_in_place(tmp_path: Path) -> None:
    project = _project(tmp_path)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "run", "configs/review-sentiment.yaml"],
        cwd=project,
        env=_env(TERM="xterm-256color"),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert process.wait(30) == 0
    screen = b"".join(chunks).decode(errors="replace")
    assert "review-sentiment: 24 rows in" in screen.splitlines()[0]  # the first line
    assert "\x1b[?25l" in screen  # a live display: the cursor hidden while it redraws
    assert re.search(r"\x1b\[\d*A|\x1b\[2K", screen)  # lines redrawn in place
    text = ANSI.sub("", screen)
    assert "answer grok-4 · attempt 1" in text
    assert "24/24 · sent 24 · answered 24 · failed 0 · 0 in flight" in text
    assert "done" in text
    assert "review-sentiment: 24 rows (24 completed)" in text
    assert "Finished in state" not in text and "View at" not in text  # Prefect's INFO lines


def test_a_pipe_gets_plain_lines_quiet_and_verbose(tmp_path: Path) -> None:
    project = _project(tmp_path)
    result = _run(project)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not ANSI.search(result.stderr)  # plain text, never redrawn
    assert result.stderr.splitlines()[0].startswith("review-sentiment: 24 rows in ")
    assert PROGRESS_LINE.search(result.stderr), result.stderr
    assert "Finished in state" not in result.stderr and "INFO" not in result.stderr
    assert "review-sentiment: 24 rows (24 completed)" in result.stdout

    quiet = _run(project, "--quiet")  # a re-run: it sends nothing
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert quiet.stderr == ""
    assert "review-sentiment: 24 rows (24 completed)" in quiet.stdout

    for path in (project / ".tablebatch").glob("server.db*"):
        path.unlink()  # a fresh API, so that this run sends (a re-run sends nothing: no attempt)
    verbose = _run(project, "--verbose")
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    assert "Finished in state Completed()" in verbose.stderr
    assert "Beginning flow run" in verbose.stderr
    assert PROGRESS_LINE.search(verbose.stderr)
    assert "review-sentiment: 24 rows (24 completed)" in verbose.stdout


def test_without_a_prefect_api_the_run_is_recorded_on_a_temporary_one(tmp_path: Path) -> None:
    project = _project(tmp_path / "project")
    home = tmp_path / "prefect-home"
    env = _env(PREFECT_HOME=str(home))
    env.pop("PREFECT_API_URL")
    env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
    result = _run(project, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "review-sentiment: 24 rows (24 completed)" in result.stdout
    with sqlite3.connect(home / "prefect.db") as db:
        (run_id, name, state), *_ = db.execute(
            "select id, name, state_type from flow_run order by created desc"
        ).fetchall()
        tasks = {
            n for (n,) in db.execute("select name from task_run where flow_run_id = ?", (run_id,))
        }
        kinds = {
            k for (k,) in db.execute("select type from artifact where flow_run_id = ?", (run_id,))
        }
    assert (name, state) == ("review-sentiment · reviews.csv", "COMPLETED")
    assert {t.rsplit("-", 1)[0] for t in tasks} >= {"load-config", "load", "build", "write"}
    assert "review-sentiment--answer-5b617cd8--a1--24a5a1d0" in tasks  # the shard: its batch
    assert {"progress", "markdown", "table"} <= kinds


def _snapshot(**fields: object) -> AttemptProgress:
    base: dict[str, object] = {
        "job": "j",
        "stage": "answer",
        "model": "m",
        "attempt": 1,
        "rows": 100,
    }
    return AttemptProgress(**(base | fields))  # type: ignore[arg-type]


def test_plain_lines_are_throttled_per_attempt_and_the_last_always_shown() -> None:
    now = [0.0]
    out = io.StringIO()
    display = ProgressDisplay(out, live=False, clock=lambda: now[0], plain_every_s=10.0)
    for t, answered in ((0, 0), (4, 10), (9, 20), (11, 30)):
        now[0] = t
        display.emit(_record(_snapshot(sent=100, answered=answered, elapsed_s=t)))
    display.emit(_record(_snapshot(attempt=2, rows=5, elapsed_s=1)))  # another attempt
    now[0] = 12
    display.emit(_record(_snapshot(sent=100, answered=100, elapsed_s=12, done=True)))
    lines = out.getvalue().splitlines()
    assert [line.split(": ", 1)[1].split(";")[0] for line in lines] == [
        "answer m, attempt 1: 0/100 ended",
        "answer m, attempt 1: 30/100 ended",
        "answer m, attempt 2: 0/5 ended",
        "answer m, attempt 1: 100/100 ended",
    ]
    assert lines[1].endswith("0:11 elapsed, left ~0:26")  # 30 in 11 s: 70 more in ~26 s
    assert lines[-1].endswith("0:12 elapsed, done")


def test_time_left_follows_the_rate_so_far() -> None:
    assert time_left(_snapshot(), 5.0) is None  # nothing ended yet: no estimate
    assert time_left(_snapshot(answered=25), 10.0) == 30.0
    assert time_left(_snapshot(answered=20, failed=5), 10.0) == 30.0
    assert time_left(_snapshot(answered=100, done=True), 10.0) == 0.0
    assert "left ?" in plain_line(_snapshot(), 3.0)


def _record(snapshot: AttemptProgress) -> object:
    import logging

    record = logging.LogRecord("tablebatch.progress", logging.INFO, "", 0, "%s", (), None)
    record.progress = snapshot
    return record
