"""Model backends of the local server: what answers a request.

A backend has ``complete(rows) -> outcomes`` over a chunk of
``(n, custom_id, body)`` and ``close()``. ``offline`` answers in-process;
``openai`` forwards to an OpenAI-compatible server; ``llama`` runs GGUF models on
CPU in a pool of processes (the ``[llama]`` extra).
"""

from __future__ import annotations

from typing import Protocol

from tablebatch.server.settings import ServerSettings
from tablebatch.server.store import Outcome


class Backend(Protocol):
    """Turns requests into responses or errors."""

    name: str

    def complete(self, rows: list[tuple[int, str, bytes]]) -> list[Outcome]:
        """Answer a chunk of requests, one outcome per row, in order."""
        ...


def make_backend(settings: ServerSettings) -> Backend:
    """The backend the settings name."""
    if settings.backend == "llama":
        from tablebatch.server.backends.llama import LlamaBackend

        return LlamaBackend(settings.llama)
    if settings.backend == "openai":
        from tablebatch.server.backends.openai_compat import OpenAICompatBackend

        if not settings.upstream_url:
            raise ValueError(
                "The openai backend needs upstream_url (--upstream-url), e.g. "
                "http://localhost:8000/v1 for vLLM."
            )
        key = settings.upstream_api_key
        return OpenAICompatBackend(
            settings.upstream_url,
            key.get_secret_value() if key else None,
            concurrency=settings.upstream_concurrency,
            timeout_s=settings.upstream_timeout_s,
            max_retries=settings.upstream_max_retries,
            schema_as=settings.upstream_schema_as,
        )
    from tablebatch.server.backends.offline import OfflineBackend

    faults = settings.faults
    return OfflineBackend(invalid_json_rate=faults.invalid_json_rate, seed=faults.seed)


def describe_backend(settings: ServerSettings) -> str:
    """The backend the settings name, and what it serves (for a start-up line)."""
    if settings.backend == "llama":
        from tablebatch.server.backends.llama import describe

        return describe(settings.llama)
    if settings.backend == "openai":
        return f"openai: forwarding to {settings.upstream_url}"
    return settings.backend
