"""The command line: the README's sample command runs a batch through a local server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import orjson

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
    assert ok.stdout.count("ok: ") == 6 and "rows in" in ok.stdout  # every sample config
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (ROOT / "configs/review-sentiment.yaml").read_text().replace("labels:", "lables:")
    )
    result = _cli("validate", str(bad), str(ROOT / "configs/quiz-eval.yaml"))
    assert result.returncode == 2  # as run exits on a bad config
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
    assert out.count("review-sentiment--answer-5b617cd8--a1--") == 3  # named by what they hold


def _project(tmp_path: Path, *, data: bool = True) -> Path:
    """A copy of the project's configs (and data) in a folder of its own."""
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    if data:
        shutil.copytree(ROOT / "data", tmp_path / "data", ignore=shutil.ignore_patterns("output"))
    (tmp_path / "pyproject.toml").write_text("")
    return tmp_path


def test_validate_fails_when_the_data_is_missing_unless_config_only(tmp_path: Path) -> None:
    project = _project(tmp_path)
    (project / "data/quiz.csv").unlink()
    configs = ("configs/quiz-eval.yaml", "configs/review-sentiment.yaml")
    result = _cli("validate", *configs, cwd=project)
    assert result.returncode == 2  # what run exits with on the same data
    assert f"{project / 'data/quiz.csv'}: no such file" in result.stderr
    assert "--config-only" in result.stderr
    assert "ok: configs/review-sentiment.yaml (24 rows in" in result.stdout
    assert _cli("run", "configs/quiz-eval.yaml", cwd=project).returncode == 2
    only = _cli("validate", "--config-only", "configs/quiz-eval.yaml", cwd=project)
    assert only.returncode == 0, only.stderr
    assert "ok: configs/quiz-eval.yaml (config only" in only.stdout


def test_validate_checks_the_data_as_run_does(tmp_path: Path) -> None:
    project = _project(tmp_path)
    config = project / "configs/review-sentiment.yaml"
    config.write_text(config.read_text() + "batch: {max_request_bytes: 100}\n")
    result = _cli("validate", "review-sentiment", cwd=project)  # a job's name works too
    assert result.returncode == 2  # every row would be skipped: run's pre-flight says so
    assert "review-sentiment: no request to send: all 24 row(s) were skipped" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_params_typo_is_refused_with_the_closest_key(tmp_path: Path) -> None:
    project = _project(tmp_path)
    config = project / "configs/review-sentiment.yaml"
    config.write_text(config.read_text().replace("temperature:", "temprature:"))
    result = _cli("validate", "configs/review-sentiment.yaml", cwd=project)
    assert result.returncode == 2
    assert "params temprature (did you mean temperature?)" in result.stderr


def test_a_job_name_or_a_near_miss(tmp_path: Path) -> None:
    project = _project(tmp_path)
    plan = _cli("plan", "review-sentiment", cwd=project)
    assert plan.returncode == 0, plan.stderr
    assert "review-sentiment (classification): 24 rows" in plan.stdout
    for command in ("run", "plan", "validate"):
        result = _cli(command, "review-sentimnt", cwd=project)
        assert result.returncode == 2, result.stderr
        assert "(did you mean review-sentiment?)" in result.stderr
    assert not (project / ".tablebatch").exists()  # nothing was started or sent


def test_every_command_exits_2_on_wrong_input(tmp_path: Path) -> None:
    for args in (
        ("demo", "nosuch.yaml"),
        ("plan", "configs/review-sentiment.yaml", "--show", "-1"),
        ("status", "no/such.yaml"),
        ("run", "--no-such-flag", "x"),
    ):
        result = _cli(*args, cwd=_project(tmp_path / args[0], data=False))
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_a_config_outside_the_project_says_which_root_it_uses(tmp_path: Path) -> None:
    project = _project(tmp_path / "project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(project / "configs/review-sentiment.yaml", elsewhere / "job.yaml")
    result = _cli("validate", str(elsewhere / "job.yaml"), cwd=project)
    assert result.returncode == 2
    assert f"is outside the project here ({project})" in result.stderr
    assert f"resolve against {elsewhere}, the config's own folder" in result.stderr
    assert f"{elsewhere / 'data/reviews.csv'}: no such file" in result.stderr


def test_plan_show_prints_the_requests_as_they_would_be_sent() -> None:
    from tablebatch.jobs.plan import plan_requests
    from tablebatch.jobs.preflight import preflight

    result = _cli("plan", "configs/review-sentiment.yaml", "--show", "2")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "the first 2 request(s) to grok-4:" in out and "Nothing was sent." in out
    blocks = out.split("  --- ")[1:]
    assert len(blocks) == 2
    checked = preflight(ROOT / "configs/review-sentiment.yaml")
    plan = plan_requests(checked.table, checked.config, checked.ids, "grok-4")
    sent = [orjson.loads(item) for _, item in plan.rows.slice(0, 2).render()[0]]
    for block, request in zip(blocks, sent, strict=True):
        custom_id, _, body = block.partition("\n")
        body = body.split("Nothing was sent.")[0]
        assert custom_id == request["custom_id"]
        assert json.loads(body) == request["body"]  # system, messages and params, as sent
    assert request["body"]["messages"][0]["role"] == "system"
    assert request["body"]["temperature"] == 0


def test_the_server_help_says_what_happens_without_keys() -> None:
    result = _cli("server", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "any caller is accepted" not in text
    assert "Without any, the server makes a key and prints it on its first line" in text


def _server(db: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "server", "--port", "0", "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "TABLEBATCH_SERVER_API_KEYS": ""},
        start_new_session=True,
    )


def test_the_server_says_its_url_and_key_first_and_stops_cleanly(tmp_path: Path) -> None:
    for stop in (signal.SIGTERM, signal.SIGINT):  # a supervisor's stop, a terminal's Ctrl-C
        proc = _server(tmp_path / f"{stop.name}.db")
        try:
            first = proc.stdout.readline()  # stdout and stderr together: uvicorn's too
            assert first.startswith("tablebatch server listening on http://127.0.0.1:"), first
            url = first.split("listening on ")[1].split()[0]
            key = first.split("generated key: ")[1].split()[0]
            assert httpx.get(url + "/batches").status_code == 401
            headers = {"Authorization": f"Bearer {key}"}
            assert httpx.get(url + "/batches", headers=headers).status_code == 200
            os.killpg(proc.pid, stop)  # the whole group, as a terminal does
            rest, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        assert proc.returncode == 128 + stop, rest
        assert "leaked semaphore" not in rest and "Traceback" not in rest, rest
