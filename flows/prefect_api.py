"""A temporary Prefect API for a run when none is configured, started in parallel.

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
Prefect how it ended; it exits when the run does, however the run ends.

Run as ``python -m flows.prefect_api FD`` (FD: a listening socket it inherits).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO

READY_TIMEOUT_S = 180.0  # a first start migrates a new database: up to a minute on 2 busy cores
STOP_TIMEOUT_S = 10.0  # a server whose run is gone: its shutdown, at most
FLUSH_TIMEOUT_S = 5.0  # the run's events and logs, sent before it stops the server
CONFIGURED = "configured"
SERVING = "serving"
SERVER_ENV = {  # what Prefect's SubprocessASGIServer sets for its temporary server
    "PREFECT_UI_ENABLED": "0",
    "PREFECT__SERVER_EPHEMERAL": "1",
    "PREFECT__SERVER_FINAL": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}


class PrefectApiError(RuntimeError):
    """The temporary Prefect API did not start; the message says why and what to do."""


class TemporaryPrefectApi:
    """Prefect's API server for one run, started before Prefect is imported here.

    ``start()`` spawns it (costs ~10 ms here); ``needed()`` says whether no API is
    configured (then ``url`` is the temporary one, already in ``os.environ``); ``wait()``
    blocks until it answers; ``stop()`` ends it once the run's events and logs are sent.
    """

    def __init__(self) -> None:
        self.url: str | None = None
        self._process: subprocess.Popen[str] | None = None
        self._answer: str | None = None
        self._answered = threading.Event()
        self._tail: list[str] = []

    def start(self) -> None:
        """Spawn the server on a free port of 127.0.0.1 (its socket is bound here, so no
        other process can take the port meanwhile)."""
        if os.environ.get("PREFECT_API_URL"):
            self._answer = CONFIGURED  # the environment names an API: nothing to start
            self._answered.set()
            return
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
        self.url = f"http://127.0.0.1:{port}/api"
        assert self._process.stdout is not None
        threading.Thread(
            target=self._read, args=(self._process.stdout,), name="prefect-api-log", daemon=True
        ).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            if self._answer is None and line.strip() in (CONFIGURED, SERVING):
                self._answer = line.strip()
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
        if self._answer != SERVING:
            self.stop()
            self._fail("did not start")
        assert self.url is not None
        os.environ["PREFECT_API_URL"] = self.url
        return True

    def wait(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Block until the server answers its health check."""
        import httpx

        assert self._process is not None and self.url is not None
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
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
        tail = "".join(self._tail[-15:]).rstrip()
        raise PrefectApiError(
            f"the temporary Prefect API {what}"
            + (f":\n{tail}\n" if tail else "; ")
            + "set PREFECT_API_URL to a running Prefect server (prefect server start) to use "
            "that instead."
        )

    def stop(self) -> None:
        """Send the run's remaining events and logs, then ask the server to stop. The run
        does not wait for it: it finishes its shutdown alone (its services write what
        they hold), and it ends itself if the run is gone first."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None and "prefect" in sys.modules:
            _flush_prefect()
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


def main(argv: list[str]) -> int:
    """The server process: exit when Prefect's settings name an API (or forbid a temporary
    one, ``PREFECT_SERVER_EPHEMERAL_ENABLED=false``: Prefect then says what to set), else
    serve on FD."""
    fd = int(argv[0])
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        print(CONFIGURED, flush=True)  # an API, or no temporary one wanted: Prefect's call
        return 0
    parent = os.getppid()
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    print(SERVING, flush=True)
    import uvicorn
    from prefect.server.api.server import create_app

    config = uvicorn.Config(create_app(), log_level="error", lifespan="on")
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
