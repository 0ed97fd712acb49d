"""The ``tablebatch`` command line.

    tablebatch run CONFIG [--set key=value ...]   run a job (a local server unless it names an API)
    tablebatch plan CONFIG [--set key=value ...]  what a run would send; sends nothing
    tablebatch validate CONFIG ...                check configs (and their data, when reachable)
    tablebatch status CONFIG|JOB                  a job's batches on its API, and its output
    tablebatch jobs [CONFIG|JOB] [--status S]     the jobs an API knows of, newest first
    tablebatch cancel CONFIG|JOB [--yes]          cancel a job's open batches, keep the answers
    tablebatch server [--port 8000] [--db PATH] [--backend offline|openai] ...
    tablebatch demo [CONFIG]                      the Batch API calls of a job, one by one

Imports are kept inside the commands, so that ``tablebatch server`` starts
without loading Prefect.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FAULT_FLAGS: dict[str, tuple[str, type, str]] = {
    "--fault-seed": ("seed", int, "seed of every injected fault (default 0)"),
    "--fault-rate-limit": ("rate_limit_rate", float, "share of API calls answered 429"),
    "--fault-retry-after": ("retry_after_s", float, "Retry-After seconds sent with a 429"),
    "--fault-server-error": ("server_error_rate", float, "share of API calls answered 500"),
    "--fault-unavailable": ("unavailable_rate", float, "share of API calls answered 503"),
    "--fault-post-commit-error": (
        "post_commit_error_rate",
        float,
        "share of POSTs answered 500 after they took effect",
    ),
    "--fault-disconnect": (
        "disconnect_rate",
        float,
        "share of API calls whose connection drops mid-answer, after the effect",
    ),
    "--fault-latency": ("latency_s", float, "seconds added to every API call"),
    "--fault-request-failure": ("request_failure_rate", float, "share of requests that fail"),
    "--fault-batch-failure": ("batch_failure_rate", float, "share of batches that fail"),
    "--processing-delay": ("processing_delay_s", float, "seconds a batch waits after start"),
    "--processing-rate": ("processing_rate", float, "requests/s processed at most (0: no cap)"),
}


def _server_parser(sub: Any) -> None:
    p = sub.add_parser(
        "server",
        help="run the local Batch API server",
        description="Run the local Batch API server (the spec of seeds/batch-api.md) in the "
        "foreground. Settings not given here come from TABLEBATCH_SERVER_* variables.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed)")
    p.add_argument(
        "--db",
        default=None,
        help="SQLite file (default .tablebatch/server.db; ':memory:' keeps nothing)",
    )
    p.add_argument("--backend", choices=("offline", "openai"), default=None)
    p.add_argument("--upstream-url", help="OpenAI-compatible base URL for --backend openai")
    p.add_argument(
        "--upstream-api-key-env",
        metavar="VAR",
        help="environment variable holding the upstream API key",
    )
    p.add_argument("--upstream-concurrency", type=int, default=None)
    p.add_argument(
        "--api-key",
        action="append",
        metavar="KEY",
        help="accepted bearer key (repeatable); prefer TABLEBATCH_SERVER_API_KEYS, which "
        "keeps keys out of the process list. None: any caller is accepted.",
    )
    p.add_argument(
        "--no-auth",
        action="store_true",
        help="accept any caller (without keys, the server makes one and prints it)",
    )
    p.add_argument("--models", help="comma-separated model names served (default: any)")
    p.add_argument("--access-log", action="store_true", help="log every HTTP call")
    for flag, (_, kind, text) in FAULT_FLAGS.items():
        p.add_argument(flag, type=kind, default=None, help=text)


def cmd_server(args: argparse.Namespace) -> int:
    """Run the server in the foreground until Ctrl-C."""
    from pydantic import ValidationError

    from tablebatch.server import ServerSettings, serve

    overrides: dict[str, Any] = {}
    for flag in ("backend", "upstream_url", "upstream_concurrency", "models"):
        if getattr(args, flag) is not None:
            overrides[flag] = getattr(args, flag)
    if args.api_key:
        overrides["api_keys"] = args.api_key
    if args.upstream_api_key_env:
        value = os.environ.get(args.upstream_api_key_env)
        if not value:
            print(f"error: ${args.upstream_api_key_env} is not set.", file=sys.stderr)
            return 2
        overrides["upstream_api_key"] = value
    faults = {
        field: getattr(args, flag.lstrip("-").replace("-", "_"))
        for flag, (field, _, _) in FAULT_FLAGS.items()
        if getattr(args, flag.lstrip("-").replace("-", "_")) is not None
    }
    if faults:
        overrides["faults"] = faults
    if args.db is not None:
        overrides["db"] = args.db
    elif "TABLEBATCH_SERVER_DB" not in os.environ:
        os.makedirs(".tablebatch", exist_ok=True)
        overrides["db"] = ".tablebatch/server.db"
    try:
        settings = ServerSettings(**overrides)
    except ValidationError as exc:
        print(f"error: invalid server settings:\n{exc}", file=sys.stderr)
        return 2
    if args.no_auth:
        settings.api_keys = []
        auth = "off (--no-auth: any caller)"
    elif settings.api_keys:
        auth = f"{len(settings.api_keys)} key(s)"
    else:
        import secrets

        from pydantic import SecretStr

        key = "tb-" + secrets.token_urlsafe(24)
        settings.api_keys = [SecretStr(key)]
        auth = f"on; generated key: {key} (choose one with TABLEBATCH_SERVER_API_KEYS)"

    def ready(url: str) -> None:
        print(
            f"tablebatch server listening on {url}  (db {settings.db}, backend "
            f"{settings.backend}, auth {auth})",
            flush=True,
        )

    try:
        serve(settings, host=args.host, port=args.port, access_log=args.access_log, on_ready=ready)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Send a sample table through the local server and print the answers."""
    from flows.demo import run_demo

    return run_demo(args.config, rows=args.rows)


def _quiet_prefect() -> None:
    """No telemetry from a machine that may have no internet (see PREFECT.md)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")


def _error(message: object) -> None:
    print(f"error: {message}", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    """Run a job through the Prefect flow; 0 when it completed (failed rows are data)."""
    from tablebatch.api import BatchApiError
    from tablebatch.io import read_table, resolve
    from tablebatch.jobs.build import check_table
    from tablebatch.jobs.config import load_config, project_root
    from tablebatch.jobs.errors import JobAborted, JobCancelled, JobError

    try:  # everything about the config and the data is checked before Prefect starts
        config = load_config(args.config, args.set)
        path = resolve(config.input.path, project_root(args.config))
        table = read_table(path, string_columns=[config.input.id_column])
        ids = check_table(table, config, path)
        _check_sendable(config, table, ids)
    except JobError as exc:
        _error(exc)
        return 2
    del table, ids  # the flow reads the table again: not two copies of it in memory
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    _quiet_prefect()
    from flows.job import batch_job

    _no_tracebacks_for((JobError, BatchApiError))
    try:
        report = batch_job(config=args.config, settings=args.set)
    except JobAborted as exc:  # Ctrl-C, a stop signal, a cancel in Prefect: batch.on_abort
        if isinstance(exc, JobCancelled) and exc.report is not None:
            print(_summary(exc.report))
        _error(exc)
        return 130 if exc.signal == signal.SIGINT else 1
    except (JobError, BatchApiError) as exc:
        _error(exc)
        return 1
    print(_summary(report))
    cancelled = report["rows_by_status"].get("cancelled", 0)
    if cancelled:
        _error(
            f"{cancelled} row(s) were not answered: their batch was cancelled while the job "
            f"ran. Answered rows are kept; run the job again to send the rest."
        )
        return 1
    return 0


def _check_sendable(config: Any, table: Any, ids: Any) -> None:
    """Before Prefect starts: something to send, and a key to send it with."""
    from tablebatch.jobs.build import plan_requests
    from tablebatch.jobs.errors import ConfigError, DataError

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


class _NoTraceback(logging.Filter):
    """Keeps the message of an expected error and drops its traceback from the terminal."""

    def __init__(self, expected: tuple[type[BaseException], ...]) -> None:
        super().__init__()
        self.expected = expected

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], self.expected):
            record.exc_info = None
            record.exc_text = None
        return True


def _no_tracebacks_for(expected: tuple[type[BaseException], ...]) -> None:
    """Errors that tell the user what to change need no Python traceback on the terminal."""
    quiet = _NoTraceback(expected)
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(quiet)


def _summary(report: dict[str, Any]) -> str:
    by_status = ", ".join(f"{v} {k}" for k, v in sorted(report["rows_by_status"].items()))
    lines = [
        f"{report['job']}: {report['output_rows']} rows ({by_status}); "
        f"{report['tokens']['prompt'] + report['tokens']['completion']} tokens in "
        f"{len(report['batches'])} batch(es)",
    ]
    gold = report.get("gold")
    if gold:
        lines.append(
            f"  accuracy {gold['accuracy']:.1%}, macro-F1 {gold['macro_f1']:.1%} against "
            f"{gold['gold_column']} ({gold['invalid_answers']} invalid answers)"
        )
    for model, stats in (report.get("per_model") or {}).items():
        score = "–" if stats["mean_score"] is None else f"{stats['mean_score']:.3f}"
        lines.append(f"  {model}: mean score {score} over {stats['scored']} answers")
    if report.get("rouge"):
        lines.append("  mean ROUGE-L " + f"{report['rouge']['rougeL'] or 0:.3f}")
    lines.append(f"  output: {report['output']}")
    lines.append(f"  report: {report['output']}.report.json")
    return "\n".join(lines)


def cmd_plan(args: argparse.Namespace) -> int:
    """Show what a run would send, and send nothing."""
    from tablebatch.api.dialects import limits_of
    from tablebatch.io import read_table, resolve
    from tablebatch.jobs.build import check_table, estimate_tokens, plan_requests, within_limits
    from tablebatch.jobs.config import load_config, project_root
    from tablebatch.jobs.errors import JobError
    from tablebatch.jobs.submit import batch_name

    try:
        config = load_config(args.config, args.set)
        path = resolve(config.input.path, project_root(args.config))
        table = read_table(path, string_columns=[config.input.id_column])
        ids = check_table(table, config, path)
    except JobError as exc:
        _error(exc)
        return 2
    provider = config.api.provider if config.api else "seed"
    if config.api is None or config.api.is_local:
        api = f"a local server (offline backend), in the {provider} dialect"
    else:
        api = f"{config.api.base_url} ({provider})"
    config = within_limits(config, limits_of(provider))  # shards fit the provider's batches
    print(f"{config.name} ({config.kind}): {table.num_rows} rows from {path}")
    print(f"  API: {api}")
    size = config.batch.max_requests
    for model in config.model_names:
        plan = plan_requests(table, config, ids, model)
        batches: list[tuple[str, int, int]] = []
        requests = tokens = total_bytes = 0
        for index, start in enumerate(range(0, len(plan.rows), size)):
            # what a run's shard does: render its rows, then split them by bytes if need be
            rendered, skipped = plan.rows.slice(start, size).render()
            plan.skipped.update(skipped)
            name = batch_name(config, "answer", config.fingerprint(model), 1, index)
            for k, piece in enumerate(rendered.shards(size, config.batch.max_bytes)):
                batches.append((name if k == 0 else f"{name}-{k}", len(piece), piece.nbytes))
            requests += len(rendered)
            tokens += estimate_tokens(rendered)
            total_bytes += rendered.nbytes
        print(
            f"  {model}: {requests} request(s), {len(plan.skipped)} skipped, "
            f"{len(batches)} batch(es), ~{tokens} prompt tokens, {total_bytes} bytes"
        )
        for name, count, nbytes in batches:
            print(f"    {name}: {count} requests, {nbytes} bytes")
        for custom_id, reason in list(plan.skipped.items())[:5]:
            print(f"    skipped {custom_id}: {reason}")
    if config.scoring == "judge" and config.judge:
        print(f"  then a judge batch per model to {config.judge.model}")
    print("Nothing was sent.")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Check configs (and their data when it can be read here); 1 if any is invalid."""
    from tablebatch.io import read_table, resolve
    from tablebatch.jobs.build import check_table
    from tablebatch.jobs.config import load_config, project_root
    from tablebatch.jobs.errors import DataError, JobError

    bad = 0
    for path in args.configs:
        try:
            config = load_config(path)
        except JobError as exc:
            _error(exc)
            bad += 1
            continue
        data = resolve(config.input.path, project_root(path))
        try:
            table = read_table(data, string_columns=[config.input.id_column])
        except DataError as exc:
            if "no such file" in str(exc) or "matches no file" in str(exc):
                print(f"ok: {path} (config only: {data} is not here)")
            else:
                _error(exc)
                bad += 1
            continue
        try:
            check_table(table, config, data)
        except DataError as exc:
            _error(exc)
            bad += 1
            continue
        print(f"ok: {path} ({table.num_rows} rows in {data} checked)")
    return 1 if bad else 0


def _job_api(target: Any) -> Any:
    """A client for the job's API (its config's, or the project's local server)."""
    _quiet_prefect()
    from flows.manage import job_api

    return job_api(target)


def _target(arg: str) -> Any:
    """CONFIG|JOB as a ``JobTarget`` (job names are looked up in the project of the
    current folder)."""
    from tablebatch.jobs.config import project_root
    from tablebatch.jobs.manage import find_job

    return find_job(arg, project_root(Path.cwd() / "CONFIG"))


def _no_database(target: Any, db: object) -> int:
    _error(
        f"{target.name}: no batches to look at: the job names no API and the project has no "
        f"local server database ({db}); run the job first, or give its config."
    )
    return 1


def cmd_status(args: argparse.Namespace) -> int:
    """Print a job's batches on its API and the state of its output; 1 if nothing is known."""
    from tablebatch.api import BatchApiError
    from tablebatch.jobs.errors import JobError
    from tablebatch.jobs.manage import job_batches, output_state, status_lines

    try:
        target = _target(args.job)
    except JobError as exc:
        _error(exc)
        return 2
    try:
        path = target.output_path
        output = output_state(path) if path else None
        with _job_api(target) as (client, api):
            batches = job_batches(client, target.name)
        lines = status_lines(target, api, batches, output)
    except FileNotFoundError as exc:
        return _no_database(target, exc)
    except (JobError, BatchApiError) as exc:
        _error(exc)
        return 1
    print("\n".join(lines))
    if not batches and (output is None or output.written_at is None):
        _error(f"{target.name}: the API has no batch of this job, and it has no output yet.")
        return 1
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    """Print the jobs an API knows of (its batches grouped by job), newest first."""
    from tablebatch.api import BatchApiError
    from tablebatch.jobs.config import project_root
    from tablebatch.jobs.errors import JobError
    from tablebatch.jobs.manage import JobTarget, iter_all_batches, jobs_lines

    try:
        target = _target(args.job) if args.job else JobTarget("", project_root(Path.cwd() / "x"))
    except JobError as exc:
        _error(exc)
        return 2
    try:
        with _job_api(target) as (client, api):
            batches = list(iter_all_batches(client, args.status))
    except FileNotFoundError as exc:
        _error(
            f"no local server database here ({exc}): no job has run from this project; give a "
            "config to ask its API."
        )
        return 1
    except BatchApiError as exc:
        _error(exc)
        return 1
    print("\n".join(jobs_lines(api, batches, args.status)))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel a job's open batches (after asking), wait until they are cancelled, and say
    what was answered (kept) and what was stopped."""
    from tablebatch.api import BatchApiError
    from tablebatch.jobs.errors import JobError
    from tablebatch.jobs.manage import (
        batch_line,
        cancel_batches,
        id_width,
        in_order,
        job_open_batches,
        status_header,
    )

    try:
        target = _target(args.job)
    except JobError as exc:
        _error(exc)
        return 2
    try:
        with _job_api(target) as (client, api):
            found = job_open_batches(client, target.name)
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
                    _error("no answer: nothing was cancelled (pass --yes to cancel without asking)")
                    return 2
                if answer.strip().lower() not in ("y", "yes"):
                    print("Nothing was cancelled.")
                    return 1
            outcome = cancel_batches(client, found, timeout_s=args.timeout)
    except FileNotFoundError as exc:
        return _no_database(target, exc)
    except (JobError, BatchApiError) as exc:
        _error(exc)
        return 1
    print(
        f"{target.name}: cancelled {len(outcome.batches) - len(outcome.not_ended)} batch(es): "
        f"{outcome.answered} row(s) answered (kept: a later run of the job sends only the "
        f"rest), {outcome.stopped} stopped."
    )
    if outcome.not_ended:
        _error(
            f"{len(outcome.not_ended)} batch(es) were not cancelled after {args.timeout:.0f} s: "
            f"{', '.join(b.id for b in outcome.not_ended)}; see tablebatch status {target.name}"
        )
        return 1
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    """Register the deployments with the Prefect server of PREFECT_API_URL."""
    _quiet_prefect()
    from flows.deploy import deploy, read_specs
    from tablebatch.jobs.errors import JobError

    root = Path(args.root).resolve()
    try:
        specs = read_specs(root, Path(args.file) if args.file else None)
        names = deploy(root, specs)
    except (JobError, OSError) as exc:
        _error(exc)
        return 2
    for spec, name in zip(specs, names, strict=True):
        when = ", ".join(
            f"cron {s['cron']} ({s.get('timezone', 'UTC')})"
            if "cron" in s
            else f"every {s['interval']} s"
            for s in spec.schedules
        )
        print(f"deployed {name}  [{when or 'no schedule'}]  pool {spec.work_pool}")
    for pool in sorted({s.work_pool for s in specs}):
        print(f"Start a worker: prefect worker start --pool {pool} --type process")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve every deployment from this process (schedules and UI runs), until Ctrl-C."""
    _quiet_prefect()
    from flows.deploy import read_specs, serve
    from tablebatch.jobs.errors import JobError

    try:
        specs = read_specs(Path(args.root).resolve(), Path(args.file) if args.file else None)
    except JobError as exc:
        _error(exc)
        return 2
    serve(specs)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``tablebatch``."""
    parser = argparse.ArgumentParser(
        prog="tablebatch", description="LLM batch jobs over tables, on Prefect."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("run", "run a job: load, send, wait, collect, join, write"),
        ("plan", "show what a run would send (rows, requests, batches, tokens); send nothing"),
    ):
        command = sub.add_parser(name, help=text, description=text)
        command.add_argument("config", help="a job config, e.g. configs/review-sentiment.yaml")
        command.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config key (dotted, YAML value), e.g. --set batch.max_requests=500",
        )
    validate = sub.add_parser("validate", help="check job configs without running them")
    validate.add_argument("configs", nargs="+", metavar="CONFIG")
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
        "--status",
        choices=(
            "created",
            "pending",
            "processing",
            "completed",
            "failed",
            "cancelling",
            "cancelled",
        ),
        help="only batches in this status (the API's own filter)",
    )
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
    for name, text in (
        ("deploy", "register the deployments (prefect.yaml + configs/) with the Prefect server"),
        ("serve", "serve the deployments from this process: schedules and UI runs, no worker"),
    ):
        command = sub.add_parser(name, help=text, description=text)
        command.add_argument("--root", default=".", help="the project folder (default: here)")
        command.add_argument("--file", help="the deployments file (default: <root>/prefect.yaml)")
    _server_parser(sub)
    demo = sub.add_parser(
        "demo",
        help="run the sample job's rows through a local server and show the answers",
    )
    demo.add_argument("config", nargs="?", default="configs/review-sentiment.yaml")
    demo.add_argument("--rows", type=int, default=None, help="use only the first N rows")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tablebatch`` console script."""
    args = build_parser().parse_args(argv)
    handler = {
        "run": cmd_run,
        "plan": cmd_plan,
        "validate": cmd_validate,
        "status": cmd_status,
        "jobs": cmd_jobs,
        "cancel": cmd_cancel,
        "deploy": cmd_deploy,
        "serve": cmd_serve,
        "server": cmd_server,
        "demo": cmd_demo,
    }[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
