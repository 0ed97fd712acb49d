"""The temporary Prefect API kept for the next run: its state file, its identity, its
idle time.

A kept server (``TABLEBATCH_PREFECT_API_IDLE_S`` > 0, see ``flows.prefect_api``) is
found through a file in ``$PREFECT_HOME`` (``tablebatch-prefect-api.json``: pid, URL
and a random token, mode 0600), so a run with another ``PREFECT_HOME`` never finds it;
a run uses it only when that file is the user's own and the server at that URL answers
with its token, its home, database and Prefect version (a stale file, a reused port, a
copied home: a new server). The server counts the calls it gets and exits on its own,
giving up its file first, once none came for its idle time. Finding, claiming and giving
up the file happen under the home's lock, one process at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STATE_FILE = "tablebatch-prefect-api.json"  # in $PREFECT_HOME: the kept server's pid, URL, token
LOCK_FILE = "tablebatch-prefect-api.lock"  # finding or claiming it, one process at a time
LOG_FILE = "tablebatch-prefect-api.log"  # what the kept server says once its run has gone
IDENTITY_PATH = "/tablebatch-prefect-api"  # answers the token, home, database and version


def identity_of(settings: Any) -> dict[str, str]:
    """What a run compares before it uses a kept server: the same home, database and
    Prefect version as its own settings give (the token is the file's)."""
    from importlib.metadata import version

    database = settings.server.database.connection_url
    return {
        "home": str(Path(settings.home).expanduser().resolve()),
        "database": database.get_secret_value() if database is not None else "",
        "prefect": version("prefect"),
    }


@contextlib.contextmanager
def locked(home: Path) -> Iterator[None]:
    """One process at a time finds, claims or gives up the home's kept server."""
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _read_state(home: Path) -> dict[str, Any] | None:
    """The home's state file when it is this user's own and private, else None."""
    path = home / STATE_FILE
    try:
        info = path.lstat()
        if info.st_uid != os.getuid() or info.st_mode & 0o077 or not path.is_file():
            return None
        state = json.loads(path.read_text())
        int(state["pid"]), str(state["url"]), str(state["token"])
        return state if isinstance(state, dict) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(state: dict[str, Any] | None) -> bool:
    if state is None:
        return False
    try:
        os.kill(int(state["pid"]), 0)
        return True
    except (OSError, ValueError):
        return False


def find_kept(home: Path, identity: dict[str, str], timeout_s: float = 60.0) -> str | None:
    """The URL of the home's kept server when it is alive and answers as this home's own,
    else None (call it holding the home's lock). Its answer counts as a use, so it does
    not idle out before the run's first call."""
    import httpx

    state = _read_state(home)
    if not _alive(state):
        return None
    assert state is not None
    url = str(state["url"])
    if not url.startswith("http://127.0.0.1:"):
        return None
    try:  # a server still starting answers once it serves
        answer = httpx.get(
            url.removesuffix("/api") + IDENTITY_PATH, timeout=timeout_s, trust_env=False
        )
        got = answer.json() if answer.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        return None
    if not isinstance(got, dict) or not secrets.compare_digest(
        str(got.get("token", "")), str(state["token"])
    ):
        return None
    return url if {k: got.get(k) for k in identity} == identity else None


def write_state(home: Path, state: dict[str, Any]) -> None:
    """The state file, private to the user, replaced whole."""
    temporary = home / f".{STATE_FILE}.{os.getpid()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(state, f)
    os.replace(temporary, home / STATE_FILE)


def forget(home: Path, token: str) -> None:
    """Remove the state file if it is still this server's (hold the home's lock)."""
    state = _read_state(home)
    if state is not None and state.get("token") == token:
        with contextlib.suppress(OSError):
            (home / STATE_FILE).unlink()


class IdleWatch:
    """ASGI middleware: answers the identity path, counts the calls in flight (an open
    websocket is one), and says when none came for ``idle_s``."""

    def __init__(self, app: Any, identity: dict[str, str], token: str, idle_s: float) -> None:
        self.app = app
        self.answer = json.dumps({**identity, "token": token}).encode()
        self.idle_s = idle_s
        self.lock = threading.Lock()
        self.active = 0
        self.last = time.monotonic()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        with self.lock:
            self.active += 1
            self.last = time.monotonic()
        try:
            if scope["type"] == "http" and scope["path"] == IDENTITY_PATH:
                headers = [(b"content-type", b"application/json")]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": self.answer})
                return
            await self.app(scope, receive, send)
        finally:
            with self.lock:
                self.active -= 1
                self.last = time.monotonic()

    def idle(self, now: float | None = None) -> bool:
        """Whether no call is in flight and none came for ``idle_s``."""
        with self.lock:
            now = time.monotonic() if now is None else now
            return self.active == 0 and now - self.last >= self.idle_s


def watch_idle(watch: IdleWatch, server: Any, home: Path, token: str) -> None:
    """Stop the kept server once it is idle, giving up its file first (under the home's
    lock, so a run finding it either used it just now or finds none)."""
    while not server.started and not server.should_exit:  # idle from when it serves
        time.sleep(0.05)
    with watch.lock:
        watch.last = time.monotonic()
    while not server.should_exit:
        time.sleep(min(1.0, watch.idle_s / 4))
        if not watch.idle():
            continue
        if not home.is_dir():  # its home was removed (a benchmark's, a test's): not made again
            server.should_exit = True
            return
        with locked(home):
            if watch.idle():  # a run that found it meanwhile has just used it
                forget(home, token)
                server.should_exit = True


def stop_kept(home: Path) -> int | None:
    """Stop the home's kept server (SIGTERM: it finishes its work); its pid, or None."""
    with locked(home):
        state = _read_state(home)
        if not _alive(state):
            return None
        assert state is not None
        pid = int(state["pid"])
        os.kill(pid, signal.SIGTERM)
        return pid
