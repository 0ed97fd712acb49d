"""Deployments on a real Prefect server: a process worker runs a triggered job, the server
rejects a bad parameter, and a schedule fires a run by itself (served by `tablebatch serve`).

Everything runs in subprocesses on free local ports with a temporary PREFECT_HOME, in a
copy of the project, and is stopped at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    handle = log.open("w")
    return subprocess.Popen(
        args,
        cwd=cwd,
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        # a worker started from a non-interactive shell inherits SIGINT ignored (PREFECT.md)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real `prefect server` on a free port; yields the environment that points at it."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
    }
    server = _start(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env,
        home,
        home / "server.log",
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, (home / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the Prefect server did not start"
            time.sleep(0.5)
        yield env
    finally:
        _stop(server)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project: code, configs, data and prefect.yaml."""
    for name in ("flows", "tasks", "configs", "data"):
        shutil.copytree(
            ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("output", "__pycache__")
        )
    shutil.copy(ROOT / "prefect.yaml", tmp_path / "prefect.yaml")
    (tmp_path / "pyproject.toml").write_text("")
    return tmp_path


def _cli(
    env: dict[str, str], cwd: Path, *args: str, timeout: float = 180
) -> subprocess.CompletedProcess:
    return subprocess.run(
        list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def _flow_runs(env: dict[str, str], deployment: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}),
        get_client(sync_client=True) as client,
    ):
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment]))
        )


def _artifacts(env: dict[str, str], flow_run_id: object) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}),
        get_client(sync_client=True) as client,
    ):
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )


def test_a_worker_runs_a_triggered_deployment(
    prefect_server: dict[str, str], project: Path
) -> None:
    env = prefect_server
    deployed = _cli(env, project, str(BIN / "tablebatch"), "deploy")
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    for name in ("review-sentiment", "article-summaries", "quiz-eval", "batch-job"):
        assert f"deployed tablebatch-job/{name}" in deployed.stdout
    assert "cron 0 6 * * 1-5 (Europe/Berlin)" in deployed.stdout
    assert "deployed tablebatch-status/job-status" in deployed.stdout
    assert "deployed tablebatch-cancel/cancel-job" in deployed.stdout
    # the CLI says once what to do next; Prefect's hint and table per deployment stay out
    assert deployed.stdout.count("prefect worker start --pool tablebatch") == 1
    assert "process work pool" not in deployed.stdout + deployed.stderr
    assert "Successfully created/updated" not in deployed.stdout + deployed.stderr

    elsewhere = project.parent / "worker-cwd"
    elsewhere.mkdir()
    worker = _start(
        [str(BIN / "prefect"), "worker", "start", "--pool", "tablebatch", "--type", "process"],
        env,
        elsewhere,  # a worker in another folder: outputs still go where the config says
        project / "worker.log",
    )
    try:
        params = json.dumps(
            {"config": "configs/review-sentiment.yaml", "overrides": {"max_attempts": 2}}
        )
        run = _cli(
            env,
            elsewhere,
            str(BIN / "prefect"),
            "deployment",
            "run",
            "tablebatch-job/batch-job",
            "--params",
            params,
            "--watch",
            "--watch-timeout",
            "240",
            timeout=300,
        )
        assert run.returncode == 0, (
            run.stdout[-3000:] + (project / "worker.log").read_text()[-3000:]
        )
    finally:
        _stop(worker)

    output = project / "data/output/review-sentiment.parquet"
    assert pq.read_table(output).num_rows == 24
    (flow_run,) = _flow_runs(env, "batch-job")
    assert flow_run.state.is_completed()
    assert flow_run.name == "review-sentiment · reviews.csv"
    kinds = {a.type for a in _artifacts(env, flow_run.id)}
    assert {"markdown", "table", "progress"} <= kinds

    bad = json.dumps({"config": "configs/review-sentiment.yaml", "overrides": {"max_attempts": 0}})
    rejected = _cli(
        env,
        elsewhere,
        str(BIN / "prefect"),
        "deployment",
        "run",
        "tablebatch-job/batch-job",
        "--params",
        bad,
    )
    assert (
        "Validation failed for field 'overrides.max_attempts'" in rejected.stdout + rejected.stderr
    )
    assert len(_flow_runs(env, "batch-job")) == 1  # nothing was created, nothing ran


def test_a_schedule_fires_a_served_run(prefect_server: dict[str, str], project: Path) -> None:
    env = prefect_server
    spec = {
        "deployments": [
            {
                "name": "every-few-seconds",
                "entrypoint": "flows/job.py:batch_job",
                "parameters": {"config": "configs/article-summaries.yaml"},
                "schedules": [{"interval": 5}],
                "concurrency_limit": 1,
            }
        ]
    }
    (project / "prefect.yaml").write_text(yaml.safe_dump(spec))
    served = _start(
        [str(BIN / "tablebatch"), "serve", "--root", str(project)],
        env,
        project,
        project / "serve.log",
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            runs = _flow_runs(env, "every-few-seconds")
            if any(r.state.is_completed() for r in runs):
                break
            assert served.poll() is None, (project / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (project / "serve.log").read_text()[-3000:]
            time.sleep(0.5)
    finally:
        _stop(served)
    assert (project / "data/output/article-summaries.parquet").exists()


def _deployment(env: dict[str, str], name: str) -> object | None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}),
        get_client(sync_client=True) as client,
    ):
        try:
            return client.read_deployment_by_name(name)
        except ObjectNotFound:
            return None


@pytest.mark.timeout(300)  # a deploy, a worker, a runner and a run, on 2 busy cores
def test_serve_after_deploy_runs_the_job(prefect_server: dict[str, str], project: Path) -> None:
    """Serving a deployment that ``deploy`` registered, with a worker on its pool: the run
    completes (it used to fail with ``Downloading flow code from storage at None``)."""
    env = prefect_server
    name = "tablebatch-job/deployed-then-served"
    spec = {
        "deployments": [
            {
                "name": "deployed-then-served",
                "entrypoint": "flows/job.py:batch_job",
                "parameters": {"config": "configs/article-summaries.yaml"},
            }
        ]
    }
    (project / "prefect.yaml").write_text(yaml.safe_dump(spec))
    deployed = _cli(env, project, str(BIN / "tablebatch"), "deploy")
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    assert _deployment(env, name).work_pool_name == "tablebatch"
    worker = _start(
        [str(BIN / "prefect"), "worker", "start", "--pool", "tablebatch", "--type", "process"],
        env,
        project,
        project / "worker.log",
    )
    served = _start(
        [str(BIN / "tablebatch"), "serve", "--root", str(project)],
        env,
        project,
        project / "serve.log",
    )
    logs = ""
    try:
        deadline = time.monotonic() + 120
        while "are being served" not in (project / "serve.log").read_text():
            assert served.poll() is None, (project / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (project / "serve.log").read_text()[-3000:]
            time.sleep(0.5)
        run = _cli(
            env,
            project,
            str(BIN / "prefect"),
            "deployment",
            "run",
            name,
            "--watch",
            "--watch-timeout",
            "240",
            timeout=300,
        )
        logs = run.stdout + (project / "serve.log").read_text()
        logs += (project / "worker.log").read_text()
        assert run.returncode == 0, logs[-4000:]
    finally:
        _stop(served)
        _stop(worker)
    assert "this process serves it now" in (project / "serve.log").read_text()
    assert _deployment(env, name).work_pool_name is None  # served now; deploy hands it back
    assert "storage at None" not in logs
    assert (project / "data/output/article-summaries.parquet").exists()
