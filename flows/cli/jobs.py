"""``tablebatch run``, ``plan`` and ``validate``: a job from its config, sent or not."""

from __future__ import annotations

import argparse
import signal
from typing import Any

from flows.cli.common import error, no_tracebacks_for, quiet_prefect, summary


def cmd_run(args: argparse.Namespace) -> int:
    """Run a job through the Prefect flow; 0 when it completed (failed rows are data)."""
    from tablebatch.api import BatchApiError
    from tablebatch.jobs.errors import JobAborted, JobCancelled, JobError
    from tablebatch.jobs.preflight import preflight

    try:  # everything about the config and the data is checked before Prefect starts
        checked = preflight(args.config, args.set)
    except JobError as exc:
        error(exc)
        return 2
    del checked  # the flow reads the table again: not two copies of it in memory
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    quiet_prefect()
    from flows.job import batch_job

    no_tracebacks_for((JobError, BatchApiError))
    try:
        report = batch_job(config=args.config, settings=args.set)
    except JobAborted as exc:  # Ctrl-C, a stop signal, a cancel in Prefect: batch.on_abort
        if isinstance(exc, JobCancelled) and exc.report is not None:
            print(summary(exc.report))
        error(exc)
        return 130 if exc.signal == signal.SIGINT else 1
    except (JobError, BatchApiError) as exc:
        error(exc)
        return 1
    print(summary(report))
    cancelled = report["rows_by_status"].get("cancelled", 0)
    if cancelled:
        error(
            f"{cancelled} row(s) were not answered: their batch was cancelled while the job "
            f"ran. Answered rows are kept; run the job again to send the rest."
        )
        return 1
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """Show what a run would send, and send nothing."""
    from tablebatch.api.dialects import limits_of
    from tablebatch.jobs.build import estimate_tokens, plan_requests, within_limits
    from tablebatch.jobs.config import load_config
    from tablebatch.jobs.errors import JobError
    from tablebatch.jobs.preflight import read_input
    from tablebatch.jobs.submit import batch_name

    try:
        config = load_config(args.config, args.set)
        checked = read_input(config, args.config)
    except JobError as exc:
        error(exc)
        return 2
    table, ids, path = checked.table, checked.ids, checked.path
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
            error(exc)
            bad += 1
            continue
        data = resolve(config.input.path, project_root(path))
        try:
            table = read_table(data, string_columns=[config.input.id_column])
        except DataError as exc:
            if "no such file" in str(exc) or "matches no file" in str(exc):
                print(f"ok: {path} (config only: {data} is not here)")
            else:
                error(exc)
                bad += 1
            continue
        try:
            check_table(table, config, data)
        except DataError as exc:
            error(exc)
            bad += 1
            continue
        print(f"ok: {path} ({table.num_rows} rows in {data} checked)")
    return 1 if bad else 0


def add_parsers(sub: Any) -> None:
    """``run``, ``plan`` and ``validate``."""
    for name, text, handler in (
        ("run", "run a job: load, send, wait, collect, join, write", cmd_run),
        (
            "plan",
            "show what a run would send (rows, requests, batches, tokens); send nothing",
            cmd_plan,
        ),
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
        command.set_defaults(handler=handler)
    validate = sub.add_parser("validate", help="check job configs without running them")
    validate.add_argument("configs", nargs="+", metavar="CONFIG")
    validate.set_defaults(handler=cmd_validate)
