"""Flow tests run on a real Prefect engine: one test harness for the session, tuned
as PREFECT.md measured (no flow heartbeat, no task-run recorder)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml


@pytest.fixture(scope="session", autouse=True)
def prefect_harness() -> Iterator[None]:
    from prefect.settings import (
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    with (
        prefect_test_harness(server_startup_timeout=60),
        temporary_settings(
            {
                PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None,
                PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED: False,
            }
        ),
    ):
        yield


@pytest.fixture
def project(tmp_path: Path) -> Callable[..., Path]:
    """Write a job config (and files) into a fresh project folder; returns the config path."""
    (tmp_path / "pyproject.toml").write_text("")

    def make(config: dict, files: dict[str, str | bytes] | None = None) -> Path:
        for name, content in (files or {}).items():
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8")
        path = tmp_path / "configs" / f"{config['name']}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
        return path

    return make
