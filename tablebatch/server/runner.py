"""Ways to run the local server: in a thread on a free port, or in the foreground.

``serve_in_thread`` is what tests and ``tablebatch run`` use: the server binds
port 0 (the OS picks a free port), and the context yields its URL. ``serve``
runs it in the foreground for ``tablebatch server``.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI

from tablebatch.server.app import create_app
from tablebatch.server.backends import make_backend
from tablebatch.server.settings import ServerSettings


@dataclass(frozen=True)
class RunningServer:
    """A server running in this process: its base URL (ending in ``/v1``) and its app."""

    url: str
    app: FastAPI

    @property
    def base_url(self) -> str:
        """The URL without ``/v1``."""
        return self.url.removesuffix("/v1")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _url(host: str, sock: socket.socket) -> str:
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/v1"


@contextmanager
def serve_app_in_thread(app: Any, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve any ASGI app in a background thread; yields its root URL.

    It leaves the process's logging as it is (``log_config=None``): uvicorn's own would
    re-configure it, flushing and closing every handler — in a Prefect flow, Prefect's
    API log and events workers, which then block the run for up to 5 s ("EventsWorker -
    Still processing items")."""
    sock = _bind(host, port)
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="on", log_config=None
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="tablebatch-server", daemon=True
    )
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server failed to start; see the log")
            threading.Event().wait(0.005)
        yield _url(host, sock).removesuffix("/v1")
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@contextmanager
def serve_in_thread(
    settings: ServerSettings | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[RunningServer]:
    """Run a local Batch API server in a background thread for the duration of the block.

    The offline backend answers large chunks in helper processes started with
    ``spawn``, which import the caller's main module again: a script that calls
    this must keep its work under ``if __name__ == "__main__":``.
    """
    app = create_app(settings)
    with serve_app_in_thread(app, host=host, port=port) as root:
        yield RunningServer(root + "/v1", app)


def serve(
    settings: ServerSettings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    access_log: bool = False,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run a server in the foreground until interrupted; ``on_ready`` gets its URL.

    A long-lived server starts the offline backend's helper processes at once (a run's
    own server, ``serve_in_thread``, starts them with its first large chunk, if ever)."""
    backend = make_backend(settings)
    start_helpers = getattr(backend, "start_helpers", None)
    if start_helpers is not None and settings.process:
        start_helpers()
    app = create_app(settings, backend=backend)
    sock = _bind(host, port)
    url = _url(host, sock)
    config = uvicorn.Config(app, log_level="info", access_log=access_log, lifespan="on")
    server = uvicorn.Server(config)
    if on_ready is not None:
        original = server.startup

        async def startup(sockets: list[socket.socket] | None = None) -> None:
            await original(sockets=sockets)
            on_ready(url)

        server.startup = startup  # type: ignore[method-assign]
    server.run(sockets=[sock])
