"""Shared fixtures: a local Batch API server in a thread on port 0, and a client for it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="tablebatch-prefect-"))

from tablebatch.server import RunningServer, ServerSettings, serve_in_thread


@pytest.fixture
def server_factory() -> Iterator[Callable[..., RunningServer]]:
    """Start servers with given settings; all are stopped at the end of the test."""
    with ExitStack() as stack:

        def make(**settings: Any) -> RunningServer:
            return stack.enter_context(serve_in_thread(ServerSettings(**settings)))

        yield make


@pytest.fixture
def server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    """A server with default settings (in-memory store, offline backend, no faults)."""
    return server_factory()


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx.Client]:
    """An httpx client for ``server``, based at ``/v1``."""
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


@pytest.fixture(scope="session")
def raw_http() -> Iterator[httpx.Client]:
    """One httpx client with no base URL, for calls made outside an SDK (a client per call
    would build a TLS context each time, which costs most of a second on a busy machine)."""
    with httpx.Client(timeout=30) as http:
        yield http
