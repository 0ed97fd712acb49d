"""Managing a job's batches: status, jobs and cancel (the CLI and the Prefect flows), and
what a run does with its batches in flight when it is stopped (Ctrl-C, a cancel in
Prefect — in-process and through a runner's SIGTERM —, a crash) or gives up waiting.

Every run here is slowed by the server's processing-rate fault, so that it is really in
flight when it is looked at or stopped; the waits poll the server, they never sleep a
fixed time.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from prefect.settings import PREFECT_API_URL

from flows.cli import main
from flows.job import batch_job
from tablebatch.jobs.errors import JobAborted, JobCancelled, JobFailed

ROWS = 60
SLOW = "20"  # requests per second: a run of ROWS rows takes about 3 s on the server


def _config(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "classification",
        "input": {"path": "data/reviews.csv", "id_column": "id"},
        "prompt": {"template": "Is this review positive or negative?\n\n{text}"},
        "model": "grok-4",
        "labels": ["positive", "negative"],
        "batch": {"max_requests": 25, "poll_interval_s": 0.05, **extra.pop("batch", {})},
        "output": {"path": f"data/output/{name}.parquet"},
        **extra,
    }


def _data(rows: int = ROWS) -> dict[str, str]:
    words = ["great", "terrible", "fine", "broken", "lovely"]
    lines = ["id,text"] + [f"r{i:03d},Review {i}: {words[i % 5]} stuff" for i in range(rows)]
    return {"data/reviews.csv": "\n".join(lines) + "\n"}


def _db(root: Path) -> sqlite3.Connection:
    return sqlite3.connect(root / ".tablebatch" / "server.db")


def _batches(root: Path) -> list[tuple[str, str, int, int, int]]:
    """(name, status, requests, completed, cancelled) of every batch on the local server."""
    with _db(root) as db:
        return db.execute(
            "SELECT name, status, request_count, completed_count, cancelled_count FROM batches "
            "ORDER BY name"
        ).fetchall()


def _until(check: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    """Poll ``check`` until it returns something true."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except sqlite3.OperationalError:  # the database is not there yet
            found = None
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        time.sleep(0.05)


def _answered(root: Path, at_least: int) -> Callable[[], bool]:
    def check() -> bool:
        with _db(root) as db:
            done = db.execute("SELECT COALESCE(SUM(completed_count), 0) FROM batches")
            return done.fetchone()[0] >= at_least

    return check


class Run:
    """``batch_job`` in a thread (the Prefect engine runs it as it would in-process)."""

    def __init__(self, config: Path) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(str(config),))
        self.thread.start()

    def _run(self, config: str) -> None:
        try:
            self.result = batch_job(config)
        except BaseException as exc:
            self.error = exc

    def join(self) -> Any:
        self.thread.join(120)
        assert not self.thread.is_alive(), "the run did not end"
        return self.result


@pytest.fixture
def slow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Servers started from here on process at most SLOW requests a second."""
    monkeypatch.setenv("TABLEBATCH_SERVER_FAULTS__PROCESSING_RATE", SLOW)


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# -- status, jobs and cancel from the command line ------------------------------------------


def test_status_jobs_and_cancel_during_and_after_a_run(project, slow, monkeypatch, capsys) -> None:
    config = project(_config("reviews"), _data())
    root = config.parent.parent
    monkeypatch.chdir(root)
    run = Run(config)
    _until(_answered(root, 10), what="a run in flight")

    code, out, _ = _cli(capsys, "status", "reviews")  # by the job's name: configs/ has it
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith(f"reviews on the local server ({root}/.tablebatch/server.db)")
    assert lines[0].endswith(": 3 batch(es), running")
    assert "processing" in out and lines[-2].startswith("  total: 60 requests: ")
    pending = int(lines[-2].split(" cancelled, ")[1].split(" pending")[0])
    assert 0 < pending < ROWS  # in flight: some answered, some not
    shown = [line.split()[2:4] for line in lines[2:5]]  # attempt, and what the batch holds
    assert [a for a, _ in shown] == ["1", "1", "1"]
    assert all(re.fullmatch("[0-9a-f]{8}", held) for _, held in shown)
    assert lines[-1] == f"  output {root}/data/output/reviews.parquet: not written yet"

    code, out, _ = _cli(capsys, "jobs")
    assert code == 0 and "1 job(s), 3 batch(es)" in out
    assert out.splitlines()[2].split()[:3] == ["reviews", "running", "3"]
    code, out, _ = _cli(capsys, "jobs", "--status", "completed")  # the API's own filter
    assert code == 0 and "with batches completed" in out

    code, out, err = _cli(capsys, "cancel", "reviews", "--yes")
    assert code == 0, err
    assert "open batch(es)" in out
    summary = out.splitlines()[-1]
    assert summary.startswith("reviews: cancelled ") and "row(s) answered (kept" in summary
    report = run.join()  # the run saw its batches cancelled while it waited
    assert run.error is None, run.error
    on_server = _batches(root)
    assert {b[1] for b in on_server} <= {"completed", "cancelled"}
    answered = sum(b[3] for b in on_server)
    stopped = sum(b[4] for b in on_server)
    assert answered + stopped == ROWS and stopped > 0
    assert report["rows_by_status"] == {"completed": answered, "cancelled": stopped}
    output = pq.read_table(root / "data/output/reviews.parquet")
    assert output.column("status").to_pylist().count("completed") == answered

    code, out, _ = _cli(capsys, "status", "configs/reviews.yaml")  # by the config's path
    assert code == 0 and out.splitlines()[0].endswith(", ended")
    assert f"{ROWS} rows, {answered} answered, {stopped} missing ({stopped} cancelled)" in out
    code, out, _ = _cli(capsys, "cancel", "reviews", "--yes")
    assert code == 0 and "no open batch" in out
    for command in (["status"], ["cancel", "--yes"]):  # a name no config, no batch has
        code, _, err = _cli(capsys, *command, "reveiws")
        assert code == 2 and "reveiws: no such job" in err and "(did you mean reviews?)" in err

    monkeypatch.delenv("TABLEBATCH_SERVER_FAULTS__PROCESSING_RATE")
    again = batch_job(str(config))  # a later run sends only the rest, and nothing twice
    assert again["rows_by_status"] == {"completed": ROWS}
    with _db(root) as db:
        sent = db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
        once = db.execute(
            "SELECT COUNT(DISTINCT custom_id) FROM requests WHERE status = 'completed'"
        ).fetchone()[0]
    assert sent == ROWS + stopped and once == ROWS


def test_bad_targets_are_refused_clearly(project, monkeypatch, capsys) -> None:
    config = project(_config("known"), _data(5))
    monkeypatch.chdir(config.parent.parent)
    code, _, err = _cli(capsys, "status", "no/such.yaml")
    assert code == 2 and "no/such.yaml: no such config file" in err
    code, _, err = _cli(capsys, "status", "bad name!")
    assert code == 2 and "neither a config file nor a job name" in err
    code, _, err = _cli(capsys, "status", "known")  # it never ran: nothing to look at
    assert code == 1 and "no local server database" in err
    code, _, err = _cli(capsys, "status", "knwon")  # no config names it
    assert code == 2 and "knwon: no such job" in err and "(did you mean known?)" in err
    code, _, err = _cli(capsys, "jobs")
    assert code == 1 and "no local server database" in err


# -- the same from Prefect: a status flow and a (scheduled) clean-up flow ---------------------


def test_the_status_and_cancel_flows(project, server_factory, monkeypatch) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.manage import cancel_job, job_status

    server = server_factory(faults={"processing_rate": 4})  # 40 rows: 10 s
    monkeypatch.setenv("TB_KEY", "any")
    api = {"base_url": server.url, "api_key_env": "TB_KEY"}
    config = project(_config("cleanup", api=api), _data(40))
    run = Run(config)
    store = server.app.state.store
    _until(lambda: any(b.completed_count for b in store.list_batches(10, None, None, None)[0]))

    status = job_status(str(config))
    assert status["lines"][0] == f"cleanup on {server.url}: 2 batch(es), running"
    assert "processing" in {row["status"] for row in status["batches"]}
    assert cancel_job(str(config), older_than_s=3600)["cancelled"] == []  # none that old
    summary = cancel_job(str(config))
    assert summary["cancelled"] and summary["not_ended"] == [] and summary["stopped"] > 0
    batches = store.list_batches(10, None, None, None)[0]
    assert {b.id for b in batches if b.status == "cancelled"} == set(summary["cancelled"])
    assert sum(b.completed_count + b.cancelled_count for b in batches) == 40
    assert run.join()["rows_by_status"]["cancelled"] == summary["stopped"]
    keys = ["cleanup-status", "cleanup-batches", "cleanup-cancel"]
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys))
        )
    assert {a.key for a in found} == set(keys)


# -- a run that is stopped ---------------------------------------------------------------------


def _flow_run_of(name: str) -> Any:
    """The running flow run of this name, if there is one."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterName,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    running = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name]), state=running)
        )
    return runs[0] if runs else None


def _set_cancelling(flow_run_id: Any) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run_id, Cancelling(), force=True)


@pytest.mark.parametrize("on_abort", ["cancel", "keep"])
def test_a_flow_run_cancelled_in_prefect_stops_its_batches(
    project, server_factory, monkeypatch, on_abort
) -> None:
    from prefect.client.orchestration import get_client

    monkeypatch.setattr("flows.manage.CANCEL_POLL_S", 0.2)
    server = server_factory(faults={"processing_rate": 10})
    store = server.app.state.store
    monkeypatch.setenv("TB_KEY", "any")
    name = f"prefect-{on_abort}"
    api = {"base_url": server.url, "api_key_env": "TB_KEY"}
    config = project(_config(name, api=api, batch={"on_abort": on_abort}), _data())
    run = Run(config)
    _until(lambda: any(b.completed_count for b in store.list_batches(10, None, None, None)[0]))
    flow_run = _until(lambda: _flow_run_of(f"{name} · reviews.csv"), what="the flow run")
    _set_cancelling(flow_run.id)  # what the UI's Cancel button does

    run.join()
    batches = store.list_batches(10, None, None, None)[0]
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run.id).state
    assert state.is_cancelled(), state
    assert "the flow run was cancelled in Prefect" in str(run.error)
    if on_abort == "keep":
        assert type(run.error) is JobAborted and "batch.on_abort: keep" in str(run.error)
        statuses = {b.status for b in batches}
        assert "processing" in statuses and "cancelled" not in statuses  # they go on
        assert not (config.parent.parent / f"data/output/{name}.parquet").exists()
        for batch in batches:  # stop them, so that the server is idle at the end
            if batch.status == "processing":
                store.cancel(batch.id)
        return
    assert isinstance(run.error, JobCancelled), run.error
    statuses = {b.status for b in batches}
    assert "cancelled" in statuses and statuses <= {"completed", "cancelled"}
    answered = sum(b.completed_count for b in batches)
    stopped = sum(b.cancelled_count for b in batches)
    assert answered + stopped == ROWS and stopped > 0
    assert run.error.report["rows_by_status"] == {"completed": answered, "cancelled": stopped}
    output = pq.read_table(config.parent.parent / f"data/output/{name}.parquet")
    assert output.column("status").to_pylist().count("cancelled") == stopped


def _subprocess_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "TABLEBATCH_SERVER_FAULTS__PROCESSING_RATE": SLOW,
        **extra,
    }


def test_ctrl_c_on_tablebatch_run_cancels_its_batches(project) -> None:
    config = project(_config("interrupted"), _data())
    root = config.parent.parent
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "run", "configs/interrupted.yaml"],
        cwd=root,
        env=_subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as in a terminal
    )
    try:
        _until(_answered(root, 10), what="a run in flight")
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole group
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-3000:]
    assert "stopped by Ctrl-C (SIGINT)" in err and "batch.on_abort: cancel" in err
    assert "Traceback" not in err
    on_server = _batches(root)
    assert {b[1] for b in on_server} <= {"completed", "cancelled"} and len(on_server) == 3
    answered, stopped = sum(b[3] for b in on_server), sum(b[4] for b in on_server)
    assert answered + stopped == ROWS and stopped > 0
    assert f"interrupted: {ROWS} rows ({stopped} cancelled, {answered} completed)" in out
    status = pq.read_table(root / "data/output/interrupted.parquet").column("status")
    assert status.to_pylist().count("cancelled") == stopped


@pytest.fixture
def served(project, tmp_path) -> Iterator[tuple[Path, subprocess.Popen]]:
    """``tablebatch serve`` (a Prefect runner) on the session's Prefect server, serving the
    job flow; the run's own watch of its state is slowed down, so that only the runner's
    SIGTERM can stop it."""
    config = project(_config("served"), _data())
    (tmp_path / "prefect.yaml").write_text(
        yaml.safe_dump(
            {"deployments": [{"name": "cancel-me", "entrypoint": "flows/job.py:batch_job"}]}
        )
    )
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "serve", "--root", str(tmp_path)],
        cwd=tmp_path,
        env=_subprocess_env(PREFECT_RUNNER_POLL_FREQUENCY="1", TABLEBATCH_CANCEL_POLL_S="600"),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield config, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # its run has ended; nothing to clean up
            proc.wait(30)
        log.close()


def test_a_cancel_through_a_prefect_runner_cancels_the_batches(served, tmp_path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    config, proc = served

    def start() -> Any:
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
        try:
            params = {"config": str(config)}
            return run_deployment("tablebatch-job/cancel-me", parameters=params, timeout=0)
        except ObjectNotFound:  # not served yet
            return None

    flow_run = _until(start, timeout=120, what="the served deployment")
    _until(_answered(tmp_path, 10), timeout=120, what="the served run in flight")
    _set_cancelling(flow_run.id)  # the runner sees it and sends SIGTERM to the run
    with get_client(sync_client=True) as client:

        def ended() -> Any:
            state = client.read_flow_run(flow_run.id).state
            return state if state.is_final() else None

        state = _until(ended, timeout=60, what="the flow run to end")
    log = (tmp_path / "serve.log").read_text()
    assert state.is_cancelled(), log[-3000:]
    assert "stopped by a stop signal (SIGTERM" in log, log[-3000:]
    on_server = _batches(tmp_path)
    assert {b[1] for b in on_server} <= {"completed", "cancelled"}
    answered, stopped = sum(b[3] for b in on_server), sum(b[4] for b in on_server)
    assert answered + stopped == ROWS and stopped > 0
    status = pq.read_table(tmp_path / "data/output/served.parquet").column("status")
    assert status.to_pylist().count("completed") == answered


def test_a_crash_cancels_the_batches_in_flight(project, server_factory, monkeypatch) -> None:
    import tablebatch.jobs.submit as submit

    server = server_factory(faults={"processing_rate": 4})  # a shard of 10 rows: 2.5 s
    store = server.app.state.store
    monkeypatch.setenv("TB_KEY", "any")
    api = {"base_url": server.url, "api_key_env": "TB_KEY"}
    config = project(_config("crashing", api=api, batch={"max_requests": 10}), _data(30))
    real_submit, real_collect = submit.submit_shard, submit.collect
    first_started = threading.Event()
    names: list[str] = []  # the batches in the order their shards were sent
    lock = threading.Lock()

    def submit_shard_zero_first(client: Any, name: str, *args: Any) -> Any:
        with lock:
            names.append(name)
            first = len(names) == 1
        if not first:  # the server answers batches in the order started
            first_started.wait(30)
        found = real_submit(client, name, *args)
        if first:
            first_started.set()
        return found

    def collect_that_fails(client: Any, batch: Any, custom_ids: Any, **options: Any) -> Any:
        if batch.name == names[0]:  # the first batch has ended: the disk is full
            raise OSError(28, "No space left on device")
        return real_collect(client, batch, custom_ids, **options)

    monkeypatch.setattr("tablebatch.jobs.submit.submit_shard", submit_shard_zero_first)
    monkeypatch.setattr("tablebatch.jobs.submit.collect", collect_that_fails)
    with pytest.raises(OSError, match="No space left"):
        batch_job(str(config))
    batches = {b.name: b for b in store.list_batches(10, None, None, None)[0]}
    assert len(names) == 3 and batches[names[0]].status == "completed"
    assert batches[names[1]].status in ("cancelling", "cancelled")  # it was in flight
    assert batches[names[2]].status in ("cancelling", "cancelled")


@pytest.mark.parametrize("on_timeout", ["keep", "cancel"])
def test_on_timeout(project, server_factory, monkeypatch, on_timeout) -> None:
    server = server_factory(faults={"processing_rate": 10})  # no shard ends in 0.5 s
    store = server.app.state.store
    monkeypatch.setenv("TB_KEY", "any")
    api = {"base_url": server.url, "api_key_env": "TB_KEY"}
    name = f"deadline-{on_timeout}"
    batch = {"max_wait_s": 0.5, "on_timeout": on_timeout}
    config = project(_config(name, api=api, batch=batch), _data())
    with pytest.raises(JobFailed) as info:
        batch_job(str(config))
    message = str(info.value)
    assert "is still processing after" in message and "(batch.max_wait_s)" in message
    assert f"run the same job again: tablebatch run {config}" in message
    batches = store.list_batches(10, None, None, None)[0]
    if on_timeout == "keep":
        assert "goes on on the server (batch.on_timeout: keep)" in message
        assert f"tablebatch status {name}" in message
        assert {b.status for b in batches} == {"processing"}
        for b in batches:
            store.cancel(b.id)
        return
    assert "batch.on_timeout is cancel: 3 batch(es) of the run were cancelled" in message
    assert {b.status for b in batches} == {"cancelled"}
    answered = sum(b.completed_count for b in batches)
    assert f"{answered} row(s) answered are kept on the API" in message
    assert f"{ROWS - answered} were stopped" in message


def test_a_scheduled_clean_up_is_a_deployment_of_prefect_yaml(tmp_path) -> None:
    from flows.deploy import CANCEL_ENTRYPOINT, STATUS_ENTRYPOINT, read_specs

    (tmp_path / "prefect.yaml").write_text(
        yaml.safe_dump(
            {
                "deployments": [
                    {
                        "name": "nightly-clean-up",
                        "entrypoint": CANCEL_ENTRYPOINT,
                        "parameters": {"job": "review-sentiment", "older_than_s": 21600},
                        "schedules": [{"cron": "0 2 * * *", "timezone": "UTC"}],
                    }
                ]
            }
        )
    )
    specs = {s.full_name: s for s in read_specs(tmp_path)}
    assert set(specs) == {"tablebatch-cancel/nightly-clean-up", "tablebatch-status/job-status"}
    clean_up = specs["tablebatch-cancel/nightly-clean-up"]
    assert clean_up.parameters == {"job": "review-sentiment", "older_than_s": 21600}
    assert clean_up.prefect_schedules()[0].cron == "0 2 * * *"
    assert specs["tablebatch-status/job-status"].entrypoint == STATUS_ENTRYPOINT
