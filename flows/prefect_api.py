"""A temporary Prefect API for a run when none is configured, started in parallel, and
kept for the next run a while.

Without ``PREFECT_API_URL`` (in the environment, a profile, ``prefect.toml``...),
Prefect 3 starts its own temporary server (``SubprocessASGIServer``) the first time
a flow needs a client: after ``import prefect``, in series with everything else, and
the run waits ~5-10 s for it. Prefect 3.9 has nothing lighter for running a flow (an
in-process API still has to import and start the same server, in the run's own
process). So ``tablebatch run`` starts the same server (Prefect's own app,
``prefect.server.api.server:create_app`` in ephemeral mode: no UI, the ephemeral
services) itself, as its first act: it boots on the machine's other core while the
run checks its config and table and imports the flow. The run then points
``PREFECT_API_URL`` at it before Prefect is imported, so the flow, its tasks, logs,
events and artifacts go to it, recorded in ``$PREFECT_HOME``'s database as with
Prefect's own temporary server.

The server decides itself whether it is needed: it reads Prefect's settings (as
Prefect would in the run) and exits at once when an API is configured. It sits in its
own session, so a terminal's Ctrl-C reaches the run alone and the run can still tell
Prefect how it ended.

Kept for the next run (``TABLEBATCH_PREFECT_API_IDLE_S``, default 600; 0: it stops
with its run): like a build tool's daemon, the server outlives its run and exits on its
own once no run has used it for that long; ``flows.prefect_kept`` holds how a run finds
it (a private file in ``$PREFECT_HOME`` and the server's answer to its token) and how it
idles out. A run that uses it pings it while it lives, so it never idles out under a run
that waits hours for a batch. ``python -m flows.prefect_api stop`` stops it.

Run as ``python -m flows.prefect_api FD`` (FD: a listening socket it inherits).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from flows.prefect_kept import (
    LOG_FILE,
    IdleWatch,
    find_kept,
    forget,
    identity_of,
    locked,
    stop_kept,
    watch_idle,
    write_state,
)

READY_TIMEOUT_S = 180.0  # a first start migrates a new database: up to a minute on 2 busy cores
STOP_TIMEOUT_S = 10.0  # a server whose run is gone: its shutdown, at most
FLUSH_TIMEOUT_S = 5.0  # the run's events and logs, sent before it stops the server
IDLE_ENV = "TABLEBATCH_PREFECT_API_IDLE_S"
IDLE_DEFAULT_S = 600.0
CONFIGURED = "configured"
SERVING = "serving"
FOUND = "found"
SERVER_ENV = {  # what Prefect's SubprocessASGIServer sets for its temporary server
    "PREFECT_UI_ENABLED": "0",
    "PREFECT__SERVER_EPHEMERAL": "1",
    "PREFECT__SERVER_FINAL": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}


class PrefectApiError(RuntimeError):
    """The temporary Prefect API did not start; the message says why and what to do."""


def idle_seconds(environ: dict[str, str] | os._Environ[str] = os.environ) -> float:
    """How long a temporary API waits for the next run (``TABLEBATCH_PREFECT_API_IDLE_S``);
    0 stops it with its run. A value that is not seconds is an error saying what to set."""
    text = environ.get(IDLE_ENV, "").strip()
    if not text:
        return IDLE_DEFAULT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ValueError(
            f"{IDLE_ENV}={text!r}: give the seconds the temporary Prefect API waits for the "
            f"next run (e.g. {IDLE_DEFAULT_S:.0f}), or 0 to stop it with each run"
        )
    return value


class TemporaryPrefectApi:
    """Prefect's API server for a run, started (or found) before Prefect is imported here.

    ``start()`` spawns the process that finds a kept server or becomes one (costs ~10 ms
    here); ``needed()`` says whether no API is configured (then ``url`` is the temporary
    one, already in ``os.environ``); ``wait()`` blocks until it answers; ``stop()`` sends
    the run's events and logs, then ends the server unless it is kept for the next run.
    """

    def __init__(self) -> None:
        self.url: str | None = None
        self.found = False  # a server an earlier run left, not this run's own
        self._own_url: str | None = None
        self._process: subprocess.Popen[str] | None = None
        self._answer: str | None = None
        self._answered = threading.Event()
        self._tail: list[str] = []
        self._log: Path | None = None
        self._idle_s = 0.0
        self._done = threading.Event()

    def start(self) -> None:
        """Spawn the server on a free port of 127.0.0.1 (its socket is bound here, so no
        other process can take the port meanwhile)."""
        if os.environ.get("PREFECT_API_URL"):
            self._answer = CONFIGURED  # the environment names an API: nothing to start
            self._answered.set()
            return
        self._idle_s = idle_seconds()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        port = sock.getsockname()[1]
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "flows.prefect_api", str(sock.fileno())],
                pass_fds=(sock.fileno(),),
                env={**os.environ, **SERVER_ENV},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,  # a terminal's Ctrl-C is the run's to handle
            )
        finally:
            sock.close()  # the child holds it now
        self._own_url = f"http://127.0.0.1:{port}/api"
        assert self._process.stdout is not None
        threading.Thread(
            target=self._read, args=(self._process.stdout,), name="prefect-api-log", daemon=True
        ).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            word, _, rest = line.strip().partition(" ")
            if self._answer is None and word in (CONFIGURED, SERVING, FOUND):
                self._answer = word
                if word == FOUND:
                    self.url = rest
                elif word == SERVING and rest:
                    self._log = Path(rest)  # a kept server says the rest there
                self._answered.set()
            else:
                self._tail = [*self._tail[-30:], line]
        self._answered.set()

    def needed(self) -> bool:
        """Whether no Prefect API is configured, so the run uses this one (then
        ``PREFECT_API_URL`` is set here; call it before Prefect is imported)."""
        if self._process is None:
            return False
        self._answered.wait(READY_TIMEOUT_S)
        if self._answer == CONFIGURED:
            self.stop()
            return False
        if self._answer not in (SERVING, FOUND):
            self.stop()
            self._fail("did not start")
        self.found = self._answer == FOUND
        if not self.found:
            self.url = self._own_url
        assert self.url is not None
        os.environ["PREFECT_API_URL"] = self.url
        if self._idle_s:  # a kept server: never idle while this run lives
            threading.Thread(target=self._keep_alive, name="prefect-api-ping", daemon=True).start()
        return True

    def _keep_alive(self) -> None:
        import httpx

        every = max(0.5, min(self._idle_s / 3, 60.0))
        with httpx.Client(timeout=10.0, trust_env=False) as client:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    client.get(f"{self.url}/health")
                if self._done.wait(every):
                    return

    def wait(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Block until the server answers its health check."""
        import httpx

        assert self.url is not None
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if (
                    not self.found
                    and self._process is not None
                    and self._process.poll() is not None
                ):
                    self._fail(f"exited with code {self._process.returncode}")
                try:
                    if client.get(f"{self.url}/health").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        self.stop()
        self._fail(f"did not answer within {timeout_s:.0f} s")

    def _fail(self, what: str) -> None:
        lines = self._tail
        if self._log is not None and self._log.exists():
            lines = self._log.read_text(errors="replace").splitlines(keepends=True)
        tail = "".join(lines[-15:]).rstrip()
        raise PrefectApiError(
            f"the temporary Prefect API {what}"
            + (f":\n{tail}\n" if tail else "; ")
            + "set PREFECT_API_URL to a running Prefect server (prefect server start) to use "
            "that instead."
        )

    def stop(self) -> None:
        """Send the run's remaining events and logs, then ask the server to stop, unless
        it is kept for the next run. The run does not wait for it: it finishes its
        shutdown alone (its services write what they hold), and it ends itself if the
        run is gone first."""
        self._done.set()
        process, self._process = self._process, None
        if process is None:
            return
        if "prefect" in sys.modules and (self.found or process.poll() is None):
            _flush_prefect()
        if self._answer in (SERVING, FOUND) and self._idle_s:
            return  # kept: it exits once no run has used it for TABLEBATCH_PREFECT_API_IDLE_S
        if process.poll() is None:
            process.terminate()


def _flush_prefect() -> None:
    """Wait (a few seconds at most) until Prefect's workers have sent what they hold."""
    try:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        EventsWorker.drain_all(timeout=FLUSH_TIMEOUT_S)
        APILogWorker.drain_all(timeout=FLUSH_TIMEOUT_S)
    except Exception:  # a failed flush loses run history, never the run's results
        pass


def _watch_parent(parent: int) -> None:
    """Stop this server when the run that started it is gone, however it ended: as on
    SIGTERM (its services finish their work), and for good after ``STOP_TIMEOUT_S``."""
    while os.getppid() == parent:
        time.sleep(0.2)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(STOP_TIMEOUT_S)
    os._exit(0)


def _serve_kept(sock: socket.socket, settings: Any, idle_s: float) -> int:
    """Find the home's kept server (print ``found URL``), or become it: claim the state
    file, say where it logs, and serve until idle."""
    home = Path(settings.home).expanduser().resolve()
    identity = identity_of(settings)
    with locked(home):
        url = find_kept(home, identity)
        if url is not None:
            print(f"{FOUND} {url}", flush=True)
            return 0
        token = secrets.token_hex(16)
        port = sock.getsockname()[1]
        write_state(
            home, {"pid": os.getpid(), "url": f"http://127.0.0.1:{port}/api", "token": token}
        )
    try:
        log = home / LOG_FILE
        print(f"{SERVING} {log}", flush=True)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(fd, 1)  # the run reads no more from here: it may be gone long before this
        os.dup2(fd, 2)
        os.close(fd)
        _import_prefect()
        import uvicorn
        from prefect.server.api.server import create_app

        watch = IdleWatch(create_app(), identity, token, idle_s)
        config = uvicorn.Config(watch, log_level="error", lifespan="on")
        server = uvicorn.Server(config)
        threading.Thread(target=watch_idle, args=(watch, server, home, token), daemon=True).start()
        # uvicorn stops on SIGTERM, then raises it again: then an exit that gives up the file
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        server.run(sockets=[sock])
    finally:
        if home.is_dir():  # (not made again if it was removed meanwhile)
            with locked(home):
                forget(home, token)
    return 0


def _read_settings() -> Any:
    """Prefect's settings, as a run would read them (the environment, the profile,
    ``prefect.toml``...), without running the ``prefect`` package's own module first: it
    imports most of Prefect (~0.8 s), and the run waits for this process's first answer,
    which most often is its last (an API is configured, or a kept one found). The package
    is run in full (``_import_prefect``) before a server starts here."""
    spec = None if "prefect" in sys.modules else importlib.util.find_spec("prefect")
    if spec is not None and spec.loader is not None:
        sys.modules["prefect"] = importlib.util.module_from_spec(spec)  # not run yet
        try:
            from prefect.settings.models.root import Settings

            return Settings()
        except Exception:  # another Prefect: read them the usual way
            _import_prefect()
    from prefect.settings import get_current_settings

    return get_current_settings()


def _import_prefect() -> None:
    """Run the ``prefect`` package's module if ``_read_settings`` left it unrun."""
    module = sys.modules.get("prefect")
    spec = getattr(module, "__spec__", None)
    if module is not None and not hasattr(module, "__version__") and spec is not None:
        spec.loader.exec_module(module)


def main(argv: list[str]) -> int:
    """The server process: exit when Prefect's settings name an API (or forbid a temporary
    one, ``PREFECT_SERVER_EPHEMERAL_ENABLED=false``: Prefect then says what to set), else
    find the kept server or serve on FD. ``stop``: stop this home's kept server."""
    settings = _read_settings()
    if argv[:1] == ["stop"]:
        home = Path(settings.home).expanduser().resolve()
        pid = stop_kept(home)
        print(
            f"stopped the temporary Prefect API of {home} (pid {pid})"
            if pid
            else f"no temporary Prefect API is kept for {home}"
        )
        return 0
    fd = int(argv[0])
    if settings.api.url or not settings.server.ephemeral.enabled:
        print(CONFIGURED, flush=True)  # an API, or no temporary one wanted: Prefect's call
        return 0
    sock = socket.socket(fileno=fd)
    idle_s = idle_seconds()
    if idle_s:
        return _serve_kept(sock, settings, idle_s)
    parent = os.getppid()
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    print(SERVING, flush=True)
    _import_prefect()
    import uvicorn
    from prefect.server.api.server import create_app

    config = uvicorn.Config(create_app(), log_level="error", lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
