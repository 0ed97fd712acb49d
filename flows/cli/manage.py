"""``tablebatch status``, ``jobs`` and ``cancel``: a job's batches on its API."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from flows.cli.common import error, quiet_prefect

STATUSES = ("created", "pending", "processing", "completed", "failed", "cancelling", "cancelled")


def _job_api(target: Any) -> Any:
    """A client for the job's API (its config's, or the project's local server)."""
    quiet_prefect()
    from flows.manage import job_api

    return job_api(target)


def _target(arg: str) -> Any:
    """CONFIG|JOB as a ``JobTarget`` (job names are looked up in the project of the
    current folder)."""
    from tablebatch.jobs.config import project_root
    from tablebatch.jobs.manage import find_job

    return find_job(arg, project_root(Path.cwd() / "CONFIG"))


def _no_database(target: Any, db: object) -> int:
    if target.config is None:  # a name that no config has: say so, and what it may mean
        return _unknown(target, "the project has no local server database", [])
    error(
        f"{target.name}: no batches to look at: the job names no API and the project has no "
        f"local server database ({db}); run the job first, or give its config."
    )
    return 1


def _unknown(target: Any, where: str, api_jobs: list[str]) -> int:
    """A job name that matches no config and no batch: 2, with the names it may mean."""
    from tablebatch.jobs.lookup import config_names, did_you_mean

    known = config_names(target.root) + api_jobs
    error(
        f"{target.name}: no such job: no config in {target.root / 'configs'} names it, and "
        f"{where}{did_you_mean(target.name, known)}"
    )
    return 2


def _api_jobs(client: Any) -> list[str]:
    """The names of the jobs with batches on the API (every page)."""
    from tablebatch.jobs.manage import group_jobs, iter_all_batches

    return [job.job for job in group_jobs(iter_all_batches(client))[0]]


def cmd_status(args: argparse.Namespace) -> int:
    """Print a job's batches on its API and the state of its output; 1 if nothing is known."""
    from tablebatch.api import BatchApiError
    from tablebatch.jobs.errors import JobError
    from tablebatch.jobs.manage import job_batches, output_state
    from tablebatch.jobs.status_view import status_lines

    try:
        target = _target(args.job)
    except JobError as exc:
        error(exc)
        return 2
    try:
        path = target.output_path
        output = output_state(path) if path else None
        with _job_api(target) as (client, api):
            batches = job_batches(client, target.name)
            if not batches and target.config is None:
                return _unknown(target, f"{api} has no batch of it", _api_jobs(client))
        lines = status_lines(target, api, batches, output)
    except FileNotFoundError as exc:
        return _no_database(target, exc)
    except (JobError, BatchApiError) as exc:
        error(exc)
        return 1
    print("\n".join(lines))
    if not batches and (output is None or output.written_at is None):
        error(f"{target.name}: the API has no batch of this job, and it has no output yet.")
        return 1
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    """Print the jobs an API knows of (its batches grouped by job), newest first."""
    from tablebatch.api import BatchApiError
    from tablebatch.jobs.config import project_root
    from tablebatch.jobs.errors import JobError
    from tablebatch.jobs.manage import JobTarget, iter_all_batches
    from tablebatch.jobs.status_view import jobs_lines

    try:
        target = _target(args.job) if args.job else JobTarget("", project_root(Path.cwd() / "x"))
    except JobError as exc:
        error(exc)
        return 2
    try:
        with _job_api(target) as (client, api):
            batches = list(iter_all_batches(client, args.status))
    except FileNotFoundError as exc:
        error(
            f"no local server database here ({exc}): no job has run from this project; give a "
            "config to ask its API."
        )
        return 1
    except BatchApiError as exc:
        error(exc)
        return 1
    print("\n".join(jobs_lines(api, batches, args.status)))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel a job's open batches (after asking), wait until they are cancelled, and say
    what was answered (kept) and what was stopped."""
    from tablebatch.api import BatchApiError
    from tablebatch.jobs.errors import JobError
    from tablebatch.jobs.manage import cancel_batches, job_batches, job_open_batches
    from tablebatch.jobs.status_view import batch_line, id_width, in_order, status_header

    try:
        target = _target(args.job)
    except JobError as exc:
        error(exc)
        return 2
    try:
        with _job_api(target) as (client, api):
            found = job_open_batches(client, target.name)
            if not found and target.config is None and not job_batches(client, target.name):
                return _unknown(target, f"{api} has no batch of it", _api_jobs(client))
            if not found:
                print(f"{target.name}: no open batch on {api}; nothing to cancel.")
                return 0
            print(f"{target.name} on {api}: {len(found)} open batch(es)")
            width = id_width(found)
            print("  " + status_header(width))
            print("\n".join("  " + batch_line(b, width=width) for b in in_order(found)))
            if not args.yes:
                try:
                    answer = input(f"Cancel these {len(found)} batch(es)? [y/N] ")
                except EOFError:
                    error("no answer: nothing was cancelled (pass --yes to cancel without asking)")
                    return 2
                if answer.strip().lower() not in ("y", "yes"):
                    print("Nothing was cancelled.")
                    return 1
            outcome = cancel_batches(client, found, timeout_s=args.timeout)
    except FileNotFoundError as exc:
        return _no_database(target, exc)
    except (JobError, BatchApiError) as exc:
        error(exc)
        return 1
    print(
        f"{target.name}: cancelled {len(outcome.batches) - len(outcome.not_ended)} batch(es): "
        f"{outcome.answered} row(s) answered (kept: a later run of the job sends only the "
        f"rest), {outcome.stopped} stopped."
    )
    if outcome.not_ended:
        error(
            f"{len(outcome.not_ended)} batch(es) were not cancelled after {args.timeout:.0f} s: "
            f"{', '.join(b.id for b in outcome.not_ended)}; see tablebatch status {target.name}"
        )
        return 1
    return 0


def add_parsers(sub: Any) -> None:
    """``status``, ``jobs`` and ``cancel``."""
    job_help = (
        "a job config (e.g. configs/review-sentiment.yaml) or a job's name (its config in "
        "configs/ gives the API; without one, the project's local server)"
    )
    status = sub.add_parser(
        "status",
        help="a job's batches on its API (status, counts, age, attempt, tokens) and its output",
        description="Show a job's batches on its API — status, requests done / failed / "
        "pending, age, attempt, tokens so far — and the state of its output table. Works "
        "while a run is going and after it.",
    )
    status.add_argument("job", metavar="CONFIG|JOB", help=job_help)
    status.set_defaults(handler=cmd_status)
    jobs = sub.add_parser(
        "jobs",
        help="the jobs an API knows of (its batches grouped by job), newest first",
        description="List the jobs an API knows of: its batches (every page) grouped by job.",
    )
    jobs.add_argument(
        "job",
        nargs="?",
        metavar="CONFIG|JOB",
        help="ask this job's API (default: the project's local server)",
    )
    jobs.add_argument(
        "--status", choices=STATUSES, help="only batches in this status (the API's own filter)"
    )
    jobs.set_defaults(handler=cmd_jobs)
    cancel = sub.add_parser(
        "cancel",
        help="cancel a job's open batches; answered rows are kept",
        description="Cancel a job's batches that have not ended and wait until they are "
        "cancelled. Answered rows stay on the API: a later run of the job sends only the rest.",
    )
    cancel.add_argument("job", metavar="CONFIG|JOB", help=job_help)
    cancel.add_argument("--yes", "-y", action="store_true", help="do not ask (for scripts)")
    cancel.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="seconds to wait for the batches to be cancelled (default 300)",
    )
    cancel.set_defaults(handler=cmd_cancel)
