"""The job flow's parameters, as a deployment's form shows them, and the name of its runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field

PROJECT_ROOT = Path(__file__).resolve().parents[1]
Scoring = Literal["exact", "normalized", "contains", "regex", "judge"]


class JobOverrides(BaseModel):
    """Changes to the job's config for one run; empty fields keep what the file says."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="Use this model instead of the config's.")
    input_path: str | None = Field(
        None, description="Read this table instead: a .csv/.parquet path, a glob or a URL."
    )
    output_path: str | None = Field(
        None, description="Write the output here instead (.parquet or .csv)."
    )
    max_requests: int | None = Field(
        None, ge=1, le=1_000_000, description="Requests per batch (batch.max_requests)."
    )
    max_attempts: int | None = Field(
        None, ge=1, le=20, description="Tries per row, the first included (batch.max_attempts)."
    )
    max_wait_s: float | None = Field(
        None, gt=0, description="Seconds to wait for a batch (batch.max_wait_s)."
    )
    scoring: Scoring | None = Field(None, description="Evaluation: how answers are scored.")
    max_cost: float | None = Field(
        None,
        ge=0,
        description="The most this run may spend, in USD at batch prices (budget.max_cost): "
        "refused before sending when its estimate is over, stopped before a shard would pass it.",
    )

    def updates(self) -> dict[str, Any]:
        """The overrides as dotted config keys."""
        keys = {
            "model": "model",
            "input_path": "input.path",
            "output_path": "output.path",
            "max_requests": "batch.max_requests",
            "max_attempts": "batch.max_attempts",
            "max_wait_s": "batch.max_wait_s",
            "scoring": "scoring",
            "max_cost": "budget.max_cost",
        }
        return {keys[k]: v for k, v in self.model_dump(exclude_none=True).items()}


def config_file(config: str) -> Path:
    """The config's path: as given, else under the project root (a worker may run elsewhere)."""
    path = Path(config).expanduser()
    if path.is_absolute() or path.exists():
        return path
    return PROJECT_ROOT / path


def run_name() -> str:
    """ "<job> · <table>", so that a run's name says which job and which data it ran."""
    parameters = flow_run.parameters
    config = str(parameters.get("config", "job"))
    try:
        data = yaml.safe_load(config_file(config).read_text(encoding="utf-8"))
        overrides = parameters.get("overrides") or {}
        if isinstance(overrides, BaseModel):
            overrides = overrides.model_dump()
        table = overrides.get("input_path") or data["input"]["path"]
        return f"{data['name']} · {Path(str(table)).name}"
    except Exception:  # a bad config fails in the flow, with its message; not here
        return Path(config).stem
