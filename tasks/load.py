"""Prefect tasks that read the config and the table (stage: load)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
from prefect import task
from prefect.cache_policies import NONE

from tablebatch.io import read_table, resolve
from tablebatch.jobs.config import JobConfig, load_config, project_root
from tablebatch.jobs.preflight import checked_ids
from tablebatch.jobs.timing import Timings


@task(name="load-config", cache_policy=NONE)
def load_config_task(
    config_path: str,
    overrides: list[str] | None = None,
    updates: dict[str, Any] | None = None,
) -> tuple[JobConfig, Path]:
    """The checked config and the project root its relative paths resolve against."""
    return load_config(config_path, overrides, updates), project_root(config_path)


@task(name="load", cache_policy=NONE)
def load_task(
    config: JobConfig, root: Path, timings: Timings | None = None
) -> tuple[pa.Table, pa.Array]:
    """The input table and its row ids, checked against the config before anything is sent."""
    with (timings or Timings()).timed("load"):
        path = resolve(config.input.path, root)
        table = read_table(path, string_columns=[config.input.id_column])
        return table, checked_ids(table, config, path)
