"""The checks a job passes before anything is sent: its config, its data, and what it
would send.

``tablebatch run`` calls them before Prefect starts (a bad input costs no engine start-up);
``validate`` and ``plan`` call the same ones, so all three judge a job alike. Plain Python.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from tablebatch.io import file_key, read_table, resolve
from tablebatch.jobs.build import check_table
from tablebatch.jobs.config import JobConfig, load_config, project_root
from tablebatch.jobs.errors import ConfigError, DataError
from tablebatch.jobs.plan import plan_requests


@dataclass
class Checked:
    """A job whose config and data passed the checks: the table as read, and its row ids."""

    config: JobConfig
    path: str
    table: pa.Table
    ids: pa.Array
    key: tuple[Any, ...] | None = None  # the file's, as it was before it was read


def read_input(config: JobConfig, config_path: str | Path) -> Checked:
    """Read the job's input table (relative to the config's project) and check its columns
    and ids; raises ``DataError`` saying what to change."""
    path = resolve(config.input.path, project_root(config_path))
    key = file_key(path, [config.input.id_column])  # before the read: see io.hand_over
    table = read_table(path, string_columns=[config.input.id_column])
    ids = checked_ids(table, config, path)
    return Checked(config, path, table, ids, key)


_last_check: tuple[weakref.ref[pa.Table], tuple[str, ...], pa.Array] | None = None


def checked_ids(table: pa.Table, config: JobConfig, source: str) -> pa.Array:
    """``check_table``'s row ids, checked once per table: the flow's load is handed the
    table the CLI's checks read (``io.hand_over``), and a million ids counted again for
    repeats cost ~0.3 s. Remembered for the last table checked only, by a weak reference
    (a worker's memory is not held by a run that has ended)."""
    global _last_check
    columns = (config.input.id_column, *(column for _, column in config.input_keys()))
    if _last_check is not None:
        ref, seen, ids = _last_check
        if ref() is table and seen == columns:
            return ids
    ids = check_table(table, config, source)
    _last_check = (weakref.ref(table), columns, ids)
    return ids


def check_sendable(config: JobConfig, table: pa.Table, ids: pa.Array) -> None:
    """Something to send, and a key to send it with; raises ``DataError`` when every row
    would be skipped, ``ConfigError`` when a remote API has no key."""
    plan = plan_requests(table, config, ids, config.model_names[0], by_content=False)
    sendable = False
    for start in range(0, len(plan.rows), 1000):  # until a row renders within the limits
        requests, skipped = plan.rows.slice(start, 1000).render()
        plan.skipped.update(skipped)
        if len(requests):
            sendable = True
            break
    if not sendable:
        reasons = sorted(set(plan.skipped.values()))
        raise DataError(
            f"{config.name}: no request to send: all {len(plan.skipped)} row(s) were skipped "
            f"({reasons[0]}{' …' if len(reasons) > 1 else ''})."
        )
    api = config.api
    if (
        api is not None
        and not api.is_local
        and not api.api_key_secret
        and not os.environ.get(api.api_key_env or "")
    ):
        raise ConfigError(
            f"No API key: set the environment variable {api.api_key_env} to the key of "
            f"{api.base_url} (or name a Prefect Secret block in api.api_key_secret)."
        )


def preflight(config_path: str | Path, settings: Sequence[str] = ()) -> Checked:
    """Every check of a run before it starts: the config (with ``--set`` overrides), the
    data, and something sendable; raises a ``JobError`` saying what to change."""
    config = load_config(config_path, list(settings))
    checked = read_input(config, config_path)
    check_sendable(config, checked.table, checked.ids)
    return checked


def root_note(config_path: str | Path, here: Path | None = None) -> str | None:
    """When the config lies outside the project of the current folder: which folder its
    relative paths resolve against, and why (None when it is this project's)."""
    root = project_root(config_path)
    here = project_root((here or Path.cwd()) / "CONFIG")
    if root == here:
        return None
    if (root / "pyproject.toml").exists() or (root / ".git").exists():
        why = "its project's folder (it holds pyproject.toml or .git)"
    else:
        why = "the config's own folder (no pyproject.toml or .git above it)"
    return (
        f"{config_path} is outside the project here ({here}): its relative paths "
        f"(input.path, output.path) resolve against {root}, {why}"
    )


def first_requests(checked: Checked, count: int, model: str | None = None) -> list[dict[str, Any]]:
    """The first ``count`` requests a run would send to ``model`` (default: the first),
    each ``{"custom_id": ..., "body": {...}}`` as rendered; rows a run would skip are
    skipped here too. For provider anthropic the body is what its dialect sends
    (Messages params)."""
    config = checked.config
    plan = plan_requests(checked.table, config, checked.ids, model or config.model_names[0])
    shown: list[dict[str, Any]] = []
    for start in range(0, len(plan.rows), max(count, 1)):
        rendered, _ = plan.rows.slice(start, max(count, 1)).render()
        shown.extend(orjson.loads(item) for _, item in rendered)
        if len(shown) >= count:
            break
    shown = shown[:count]
    if config.api is not None and config.api.provider == "anthropic":
        from tablebatch.api.dialects.anthropic import DEFAULT_MAX_TOKENS, messages_params

        max_tokens = config.api.max_tokens or DEFAULT_MAX_TOKENS
        shown = [
            {"custom_id": r["custom_id"], "params": messages_params(r["body"], max_tokens)}
            for r in shown
        ]
    return shown
