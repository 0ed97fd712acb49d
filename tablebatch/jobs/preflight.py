"""The checks a job passes before anything is sent: its config, its data, and what it
would send.

``tablebatch run`` calls them before Prefect starts (a bad input costs no engine start-up);
``validate`` and ``plan`` call the same ones, so all three judge a job alike. Plain Python.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from tablebatch.io import read_table, resolve
from tablebatch.jobs.build import check_table, plan_requests
from tablebatch.jobs.config import JobConfig, load_config, project_root
from tablebatch.jobs.errors import ConfigError, DataError


@dataclass
class Checked:
    """A job whose config and data passed the checks: the table as read, and its row ids."""

    config: JobConfig
    path: str
    table: pa.Table
    ids: pa.Array


def read_input(config: JobConfig, config_path: str | Path) -> Checked:
    """Read the job's input table (relative to the config's project) and check its columns
    and ids; raises ``DataError`` saying what to change."""
    path = resolve(config.input.path, project_root(config_path))
    table = read_table(path, string_columns=[config.input.id_column])
    ids = check_table(table, config, path)
    return Checked(config, path, table, ids)


def check_sendable(config: JobConfig, table: pa.Table, ids: pa.Array) -> None:
    """Something to send, and a key to send it with; raises ``DataError`` when every row
    would be skipped, ``ConfigError`` when a remote API has no key."""
    plan = plan_requests(table, config, ids, config.model_names[0])
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
