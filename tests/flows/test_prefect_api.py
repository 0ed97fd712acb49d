"""The temporary Prefect API kept for the next run (``TABLEBATCH_PREFECT_API_IDLE_S``):
the next run on the same Prefect home uses it, a run on another home never does, a
file that is stale, foreign or not private is ignored, it stops on ``stop`` and on its
own once idle. Real processes: ``tablebatch run``, Prefect's server, HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from flows.prefect_api import TemporaryPrefectApi
from flows.prefect_kept import IDENTITY_PATH, STATE_FILE, find_kept

ROOT = Path(__file__).resolve().parents[2]
VIEW_AT = re.compile(r"View at (http://127\.0\.0\.1:\d+)/")


def _project(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    shutil.copytree(ROOT / "data", tmp_path / "data", ignore=shutil.ignore_patterns("output"))
    (tmp_path / "pyproject.toml").write_text("")
    return tmp_path


def _env(home: Path, idle: str) -> dict[str, str]:
    env = {**os.environ, "PREFECT_HOME": str(home), "TABLEBATCH_PREFECT_API_IDLE_S": idle}
    for key in ("PREFECT_API_URL", "PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_PROFILE"):
        env.pop(key, None)
    return env


def _run(project: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "configs/review-sentiment.yaml", "--verbose"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def _state(home: Path) -> dict:
    return json.loads((home / STATE_FILE).read_text())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (its parent is this test) has ended
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pid: int, timeout_s: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _alive(pid)


def _recorded(home: Path, timeout_s: float = 120.0) -> int:
    """How many completed flow runs the home's database holds with their tasks (the
    server records task runs from their events, a moment after the run has sent them)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with sqlite3.connect(home / "prefect.db") as db:
            runs = [
                r for (r,) in db.execute("select id from flow_run where state_type = 'COMPLETED'")
            ]
            complete = 0
            for run in runs:
                names = {
                    n.rsplit("-", 1)[0]
                    for (n,) in db.execute(
                        "select name from task_run where flow_run_id = ?", (run,)
                    )
                }
                complete += names >= {"load-config", "load", "build", "write"}
        if complete == len(runs) or time.monotonic() > deadline:
            return complete
        time.sleep(0.2)


@pytest.fixture
def homes(tmp_path: Path) -> Iterator[list[Path]]:
    """Prefect homes for a test; any server kept in them is stopped at its end."""
    made: list[Path] = []
    yield made
    for home in made:
        try:
            pid = _state(home)["pid"]
        except (OSError, ValueError, KeyError):
            continue
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_the_next_run_on_the_same_home_uses_the_kept_api(tmp_path: Path, homes: list[Path]) -> None:
    project = _project(tmp_path / "project")
    home, other = tmp_path / "home", tmp_path / "other-home"
    homes += [home, other]
    first = _run(project, _env(home, "120"))
    assert first.returncode == 0, first.stderr[-3000:]
    state = _state(home)
    assert (home / STATE_FILE).stat().st_mode & 0o777 == 0o600
    assert _alive(state["pid"])  # it outlives its run
    assert VIEW_AT.search(first.stderr).group(1) + "/api" == state["url"]

    second = _run(project, _env(home, "120"))
    assert second.returncode == 0, second.stderr[-3000:]
    assert "this run sent 0 request(s)" in second.stdout
    assert VIEW_AT.search(second.stderr).group(1) + "/api" == state["url"]  # the same API
    assert _state(home) == state
    assert _recorded(home) == 2  # both runs, each with its tasks

    elsewhere = _run(project, _env(other, "120"))  # another home: never that API
    assert elsewhere.returncode == 0, elsewhere.stderr[-3000:]
    assert _state(other)["url"] != state["url"]
    assert VIEW_AT.search(elsewhere.stderr).group(1) + "/api" == _state(other)["url"]

    stop = subprocess.run(
        [sys.executable, "-m", "flows.prefect_api", "stop"],
        env=_env(home, "120"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert stop.returncode == 0, stop.stderr
    assert f"(pid {state['pid']})" in stop.stdout
    assert _wait_gone(state["pid"])
    assert not (home / STATE_FILE).exists()  # it gave up its file
    assert _alive(_state(other)["pid"])  # the other home's is not this one's to stop


def test_a_kept_api_stops_on_its_own_once_idle(
    tmp_path: Path, homes: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    homes.append(home)
    for key, value in _env(home, "1").items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    api = TemporaryPrefectApi()
    api.start()
    assert api.needed()
    api.wait()
    pid = _state(home)["pid"]
    time.sleep(2.5)  # longer than its idle time: this run's pings keep it
    assert _alive(pid)
    api.stop()  # kept: the run does not stop it
    assert _alive(pid)
    assert _wait_gone(pid)  # no run pings it any more
    assert not (home / STATE_FILE).exists()


class _Impostor(BaseHTTPRequestHandler):
    """A server at the file's URL that is not that home's API (a reused port)."""

    answer: ClassVar[dict] = {}

    def do_GET(self) -> None:
        body = json.dumps(self.answer).encode()
        self.send_response(200 if self.path == IDENTITY_PATH else 404)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_stale_foreign_or_public_state_file_is_not_used(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    identity = {"home": str(home.resolve()), "database": "sqlite:///x.db", "prefect": "3.9.1"}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Impostor)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/api"
    try:

        def state(pid: int, token: str = "t0k3n", mode: int = 0o600) -> None:
            path = home / STATE_FILE
            path.write_text(json.dumps({"pid": pid, "url": url, "token": token}))
            path.chmod(mode)

        _Impostor.answer = {**identity, "token": "t0k3n"}
        state(os.getpid())
        assert find_kept(home, identity, timeout_s=5) == url  # the genuine article

        state(os.getpid(), mode=0o644)  # readable by others: its token is not secret
        assert find_kept(home, identity, timeout_s=5) is None
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        state(dead.pid)  # the server is gone (whatever now listens there)
        assert find_kept(home, identity, timeout_s=5) is None
        state(os.getpid(), token="another")  # a server that does not know the token
        assert find_kept(home, identity, timeout_s=5) is None
        state(os.getpid())
        moved = {**identity, "home": str(tmp_path / "copied-home")}  # a copied home
        assert find_kept(home, moved, timeout_s=5) is None
        assert find_kept(home, {**identity, "prefect": "3.10.0"}, timeout_s=5) is None
        (home / STATE_FILE).write_text("{not json")
        assert find_kept(home, identity, timeout_s=5) is None
    finally:
        server.shutdown()


def test_a_bad_idle_time_is_an_input_error(tmp_path: Path) -> None:
    project = _project(tmp_path / "project")
    result = _run(project, _env(tmp_path / "home", "ten minutes"))
    assert result.returncode == 2
    assert "TABLEBATCH_PREFECT_API_IDLE_S='ten minutes'" in result.stderr
    assert "or 0 to stop it with each run" in result.stderr
    assert not (tmp_path / "home" / STATE_FILE).exists()
