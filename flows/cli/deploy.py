"""``tablebatch deploy`` and ``serve``: the project's jobs as Prefect deployments."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from flows.cli.common import error, quiet_prefect


def cmd_deploy(args: argparse.Namespace) -> int:
    """Register the deployments with the Prefect server of PREFECT_API_URL."""
    quiet_prefect()
    import httpx

    from flows.deploy import deploy, read_specs
    from tablebatch.jobs.errors import JobError

    root = Path(args.root).resolve()
    try:
        specs = read_specs(root, Path(args.file) if args.file else None)
        names = deploy(root, specs)
    except (JobError, OSError) as exc:
        error(exc)
        return 2
    except httpx.HTTPError as exc:  # the Prefect API is down or refused: could not finish
        error(f"the Prefect API did not answer ({exc}); is PREFECT_API_URL right?")
        return 1
    for spec, name in zip(specs, names, strict=True):
        when = ", ".join(
            f"cron {s['cron']} ({s.get('timezone', 'UTC')})"
            if "cron" in s
            else f"every {s['interval']} s"
            for s in spec.schedules
        )
        print(f"deployed {name}  [{when or 'no schedule'}]  pool {spec.work_pool}")
    for pool in sorted({s.work_pool for s in specs}):  # once, whatever the count
        print(f"Start a worker: prefect worker start --pool {pool} --type process")
    print("Run one: prefect deployment run <flow>/<deployment>, or from the Prefect UI")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve every deployment from this process (schedules and UI runs), until Ctrl-C."""
    quiet_prefect()
    from flows.deploy import read_specs, serve, take_over
    from tablebatch.jobs.errors import JobError

    try:
        specs = read_specs(Path(args.root).resolve(), Path(args.file) if args.file else None)
    except JobError as exc:
        error(exc)
        return 2
    for name in take_over(specs):
        print(
            f"{name} was deployed for a worker; this process serves it now "
            "(tablebatch deploy hands it back)"
        )
    serve(specs)
    return 0


def add_parsers(sub: Any) -> None:
    """``deploy`` and ``serve``."""
    for name, text, handler in (
        (
            "deploy",
            "register the deployments (prefect.yaml + configs/) with the Prefect server",
            cmd_deploy,
        ),
        (
            "serve",
            "serve the deployments from this process: schedules and UI runs, no worker",
            cmd_serve,
        ),
    ):
        command = sub.add_parser(name, help=text, description=text)
        command.add_argument("--root", default=".", help="the project folder (default: here)")
        command.add_argument("--file", help="the deployments file (default: <root>/prefect.yaml)")
        command.set_defaults(handler=handler)
