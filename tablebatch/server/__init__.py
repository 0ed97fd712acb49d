"""The local Batch API server: the spec of ``seeds/batch-api.md`` over SQLite.

Three ways in: ``create_app(settings)`` (an ASGI app, e.g. for an in-process
httpx transport), ``serve_in_thread(settings)`` (a thread on a free port), and
``tablebatch server`` (the foreground command).
"""

from tablebatch.server.app import create_app
from tablebatch.server.runner import RunningServer, serve, serve_app_in_thread, serve_in_thread
from tablebatch.server.settings import FaultSettings, Limits, ServerSettings

__all__ = [
    "FaultSettings",
    "Limits",
    "RunningServer",
    "ServerSettings",
    "create_app",
    "serve",
    "serve_app_in_thread",
    "serve_in_thread",
]
