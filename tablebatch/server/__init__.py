"""The local Batch API server: the spec of ``seeds/batch-api.md`` over SQLite, and the
batch APIs of OpenAI, Anthropic and xAI under ``/openai``, ``/anthropic`` and ``/xai``
(``tablebatch.server.dialects``; ``sdk_base_url(root, provider)`` for a provider's SDK).

Three ways in: ``create_app(settings)`` (an ASGI app, e.g. for an in-process
httpx transport), ``serve_in_thread(settings)`` (a thread on a free port), and
``tablebatch server`` (the foreground command).
"""

from tablebatch.server.app import create_app
from tablebatch.server.dialects import sdk_base_url
from tablebatch.server.runner import RunningServer, serve, serve_app_in_thread, serve_in_thread
from tablebatch.server.settings import FaultSettings, ServerLimits, ServerSettings

__all__ = [
    "FaultSettings",
    "RunningServer",
    "ServerLimits",
    "ServerSettings",
    "create_app",
    "sdk_base_url",
    "serve",
    "serve_app_in_thread",
    "serve_in_thread",
]
