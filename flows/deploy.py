"""Deployments of the job flow: from ``prefect.yaml``, and one per config in ``configs/``.

``tablebatch deploy`` registers them with the Prefect server that
``PREFECT_API_URL`` names (a local server, or Prefect Cloud), for a process
worker to run; ``tablebatch serve`` serves them from this process instead.
A config not listed in ``prefect.yaml`` becomes a deployment of its own, named
after its job, scheduled by its optional ``schedule`` key: adding a job is
adding a YAML file.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tablebatch.jobs.config import load_config
from tablebatch.jobs.errors import ConfigError

ENTRYPOINT = "flows/job.py:batch_job"
STATUS_ENTRYPOINT = "flows/manage.py:job_status"
CANCEL_ENTRYPOINT = "flows/manage.py:cancel_job"
FLOW_NAMES = {  # entrypoint -> the flow's name, the first half of a deployment's name
    ENTRYPOINT: "tablebatch-job",
    STATUS_ENTRYPOINT: "tablebatch-status",
    CANCEL_ENTRYPOINT: "tablebatch-cancel",
}
DEFAULT_POOL = "tablebatch"


@dataclass
class DeploymentSpec:
    """One deployment: a name, parameters, schedules and where it runs."""

    name: str
    parameters: dict[str, Any] = field(default_factory=dict)
    schedules: list[dict[str, Any]] = field(default_factory=list)
    description: str | None = None
    tags: list[str] = field(default_factory=list)
    concurrency_limit: int | None = None
    work_pool: str = DEFAULT_POOL
    entrypoint: str = ENTRYPOINT

    @property
    def full_name(self) -> str:
        """``<flow>/<deployment>``, as Prefect names it."""
        return f"{FLOW_NAMES[self.entrypoint]}/{self.name}"

    def options(self) -> dict[str, Any]:
        """What ``deploy`` and ``serve`` both pass to Prefect for this deployment."""
        return {
            "name": self.name,
            "parameters": self.parameters,
            "schedules": self.prefect_schedules(),
            "concurrency_limit": self.concurrency_limit,
            "description": self.description,
            "tags": self.tags,
        }

    def prefect_schedules(self) -> list[Any]:
        """The schedules as Prefect objects (cron with a time zone, or an interval)."""
        from prefect.schedules import Cron, Interval

        out = []
        for s in self.schedules:
            if "cron" in s:
                out.append(Cron(s["cron"], timezone=s.get("timezone", "UTC")))
            elif "interval" in s:
                out.append(Interval(float(s["interval"]), timezone=s.get("timezone", "UTC")))
            else:
                raise ConfigError(f"deployment {self.name}: a schedule needs cron or interval")
        return out


def manage_specs() -> list[DeploymentSpec]:
    """The job-management flows, to run from the UI: a job's status, and its cancel."""
    return [
        DeploymentSpec(
            name="job-status",
            description="A job's batches on its API and the state of its output.",
            tags=["tablebatch"],
            entrypoint=STATUS_ENTRYPOINT,
        ),
        DeploymentSpec(
            name="cancel-job",
            description="Cancel a job's open batches (those older than older_than_s); "
            "answered rows are kept. Schedule it in prefect.yaml for a clean-up.",
            tags=["tablebatch"],
            entrypoint=CANCEL_ENTRYPOINT,
        ),
    ]


def read_specs(root: Path, prefect_file: Path | None = None) -> list[DeploymentSpec]:
    """The deployments of ``prefect.yaml``, one per unlisted config in ``configs/``, and
    the job-management flows (``job-status``, ``cancel-job``) unless it lists them."""
    path = prefect_file or root / "prefect.yaml"
    specs: list[DeploymentSpec] = []
    if path.exists():
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for entry in data.get("deployments") or []:
            entrypoint = entry.get("entrypoint", ENTRYPOINT)
            if entrypoint not in FLOW_NAMES:
                continue
            specs.append(
                DeploymentSpec(
                    name=entry["name"],
                    parameters=dict(entry.get("parameters") or {}),
                    schedules=list(entry.get("schedules") or []),
                    description=entry.get("description"),
                    tags=list(entry.get("tags") or []),
                    concurrency_limit=entry.get("concurrency_limit"),
                    work_pool=(entry.get("work_pool") or {}).get("name", DEFAULT_POOL),
                    entrypoint=entrypoint,
                )
            )
    jobs = [s for s in specs if s.entrypoint == ENTRYPOINT]
    listed = {Path(s.parameters["config"]).as_posix() for s in jobs if "config" in s.parameters}
    names = {s.name for s in jobs}
    for config_path in sorted((root / "configs").glob("*.y*ml")):
        relative = config_path.relative_to(root).as_posix()
        if relative in listed:
            continue
        config = load_config(config_path)
        if config.name in names:
            raise ConfigError(f"{relative}: a deployment named {config.name} already exists")
        schedule = [config.schedule.model_dump()] if config.schedule else []
        specs.append(
            DeploymentSpec(
                name=config.name,
                parameters={"config": relative},
                schedules=schedule,
                description=f"The job in {relative}.",
                tags=["tablebatch", config.kind],
                concurrency_limit=1,
            )
        )
    managing = {s.entrypoint for s in specs}
    return specs + [s for s in manage_specs() if s.entrypoint not in managing]


def ensure_pool(name: str) -> None:
    """Create the process work pool if the server does not have it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_work_pool(WorkPoolCreate(name=name, type="process"))


def deploy(root: Path, specs: list[DeploymentSpec]) -> list[str]:
    """Register ``specs`` for a process worker; the flow runs in ``root``.

    Each deployment is applied on its own rather than through ``Flow.deploy``, which
    prints Prefect's process-pool hint and a table per deployment: the CLI says once
    what to do next.
    """
    from prefect import Flow

    sources: dict[str, Any] = {}
    done = []
    for spec in specs:
        ensure_pool(spec.work_pool)
        if spec.entrypoint not in sources:
            sources[spec.entrypoint] = Flow.from_source(
                source=str(root), entrypoint=spec.entrypoint
            )
        deployment = sources[spec.entrypoint].to_deployment(
            **spec.options(), job_variables={"working_dir": str(root)}
        )
        deployment.apply(work_pool_name=spec.work_pool)
        done.append(spec.full_name)
    return done


def take_over(specs: list[DeploymentSpec]) -> list[str]:
    """Delete the deployments of ``specs`` that ``deploy`` registered for a work pool, so
    that ``serve`` creates them afresh as served ones; returns their names.

    Serving over a deployed deployment would only update it: Prefect keeps its work pool
    and its missing code path while dropping its pull steps, and its runs then fail with
    ``Downloading flow code from storage at None``. ``tablebatch deploy`` hands them back.
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    taken = []
    with get_client(sync_client=True) as client:
        for spec in specs:
            try:
                existing = client.read_deployment_by_name(spec.full_name)
            except ObjectNotFound:
                continue
            if existing.work_pool_name:
                client.delete_deployment(existing.id)
                taken.append(f"{spec.full_name} (work pool {existing.work_pool_name})")
    return taken


def serve(specs: list[DeploymentSpec]) -> None:
    """Serve ``specs`` from this process until interrupted (no worker needed)."""
    from prefect import serve as prefect_serve

    from flows.job import batch_job
    from flows.manage import cancel_job, job_status

    flows = {ENTRYPOINT: batch_job, STATUS_ENTRYPOINT: job_status, CANCEL_ENTRYPOINT: cancel_job}
    prefect_serve(*[flows[spec.entrypoint].to_deployment(**spec.options()) for spec in specs])
