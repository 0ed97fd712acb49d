"""The client a run (or a look at a job's batches) talks to: the config's API in its
provider's dialect, with its key from the environment or a Prefect Secret block; or, for
a job that names no API (or ``base_url: local``), a local server for the run."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tablebatch.api import BatchAPI
from tablebatch.api.dialects import open_batch_api
from tablebatch.api.http import api_key_from_env
from tablebatch.io import resolve
from tablebatch.jobs.config import JobConfig

ANTHROPIC_LEDGER = ".tablebatch/anthropic-batches.jsonl"


def _key(config: JobConfig) -> tuple[str, str]:
    """The API key and where it came from (for messages; never the key itself)."""
    api = config.api
    assert api is not None and api.base_url is not None and api.api_key_env is not None
    if api.api_key_secret:
        from prefect.blocks.system import Secret  # only for a config that names a block

        return Secret.load(
            api.api_key_secret
        ).get(), f"the Prefect Secret block {api.api_key_secret!r}"
    return api_key_from_env(api.api_key_env, api.base_url), f"${api.api_key_env}"


@contextmanager
def open_client(
    config: JobConfig | None,
    root: Path,
    sleep: Callable[[float], None] = time.sleep,
    *,
    process: bool = True,
) -> Iterator[BatchAPI]:
    """A client of the config's API, in its provider's dialect; without one (or with
    ``base_url: local``), a local server for the run, speaking that dialect.

    The local server keeps its batches in ``<project>/.tablebatch/server.db``, so
    that a re-run finds what an earlier run submitted. ``sleep`` is how the client
    waits (between polls and retries). ``process=False`` serves that database without
    answering (to look at a job's batches, or cancel them, beside its run's own server).
    """
    api = config.api if config is not None else None
    options: dict[str, Any] = {"sleep": sleep}
    if api is not None:
        options |= {"timeout": api.timeout_s, "max_retries": api.max_retries}
        if api.provider == "anthropic":
            ledger = resolve(api.ledger or ANTHROPIC_LEDGER, root)
            options |= {"ledger": ledger, "max_tokens": api.max_tokens}
    if config is not None and api is not None and not api.is_local:
        assert api.base_url is not None
        key, source = _key(config)
        with open_batch_api(api.provider, api.base_url, key, key_source=source, **options) as c:
            yield c
        return
    # the local server (FastAPI, uvicorn: ~0.2 s of imports) only for a run that uses it
    from tablebatch.server import ServerSettings, serve_in_thread

    provider = api.provider if api is not None else "seed"
    folder = root / ".tablebatch"
    folder.mkdir(exist_ok=True)
    key = secrets.token_urlsafe(24)  # the run's own server answers the run alone
    backend: dict[str, str] = {}  # none named: TABLEBATCH_SERVER_BACKEND, or offline
    if not process:
        backend = {"backend": "offline"}  # it answers nothing: no model to load
    elif api is not None and api.backend:
        backend = {"backend": api.backend}
    settings = ServerSettings(
        db=str(folder / "server.db"), api_keys=[key], process=process, **backend
    )
    with serve_in_thread(settings) as server:
        url = server.url if provider == "seed" else f"{server.base_url}/{provider}/v1"
        with open_batch_api(provider, url, key, **options) as client:
            yield client
