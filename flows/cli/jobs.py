"""``tablebatch run``, ``plan`` and ``validate``: a job from its config, sent or not."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from flows.cli.common import error, no_tracebacks_for, quiet_prefect, summary


def cmd_run(args: argparse.Namespace) -> int:
    """Run a job through the Prefect flow; 0 when it completed (failed rows are data)."""
    from flows.prefect_api import TemporaryPrefectApi, idle_seconds

    try:
        idle_seconds()
    except ValueError as exc:
        error(exc)
        return 2
    quiet_prefect()
    atexit.register(gc.freeze)  # runs last: the interpreter's exit need not walk every object
    gc.disable()  # until the imports are done: they make objects by the million, few garbage
    api = TemporaryPrefectApi()
    api.start()  # boots on the other core while the config and the table are checked
    try:
        return _run(args, api)
    finally:
        api.stop()
        gc.enable()


def _warm_charts() -> threading.Thread:
    """Start the report's chart engine (vl-convert's JavaScript engine: ~0.6 s the first
    time) on the other core while Prefect starts; it releases the GIL meanwhile."""

    def warm() -> None:
        try:
            import vl_convert

            vl_convert.vegalite_to_svg({"mark": "point", "data": {"values": [{}]}})
        except Exception:  # the report draws its charts anyway (and says if it cannot)
            pass

    thread = threading.Thread(target=warm, name="tablebatch-warm-charts", daemon=True)
    thread.start()
    return thread


def _run(args: argparse.Namespace, api: Any) -> int:
    from flows.cli.display import filter_console, progress_display
    from flows.prefect_api import PrefectApiError
    from tablebatch.api import BatchApiError
    from tablebatch.jobs.config import output_path, project_root
    from tablebatch.jobs.errors import BudgetRefused, JobAborted, JobCancelled, JobError
    from tablebatch.jobs.preflight import preflight

    mode = "quiet" if args.quiet else "verbose" if args.verbose else "normal"
    try:  # everything about the config and the data is checked before Prefect starts
        config_path = _config_path(args.config)
        checked = preflight(config_path, args.set)
        _check_backend(checked.config, args.backend)
    except JobError as exc:
        error(exc)
        return 2
    name, rows, path = checked.config.name, checked.table.num_rows, checked.path
    local = checked.config.api is None or checked.config.api.is_local
    html = "://" not in output_path(checked.config, project_root(config_path))  # its charts
    del checked  # the flow reads the table again: not two copies of it in memory
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    display = progress_display(mode)
    if display is not None:
        display.print(f"{name}: {rows} rows in {path} checked")
    try:
        temporary = api.needed()  # sets PREFECT_API_URL: before Prefect is imported
    except PrefectApiError as exc:
        error(exc)
        return 1
    charts = _warm_charts() if html else None
    if display is not None:
        display.start(
            "starting Prefect (a temporary API; PREFECT_API_URL names a server)"
            if temporary
            else "starting Prefect"
        )
    try:
        from flows.job import batch_job

        filter_console(mode, display)
        no_tracebacks_for((JobError, BatchApiError))
        if local:  # while the temporary API boots: the run's own Batch API server
            import tablebatch.server  # noqa: F401
        if temporary:
            api.wait()
        gc.freeze()  # what the imports made lives to the end: later collections skip it
        gc.enable()
        with _no_heartbeats() if temporary else contextlib.nullcontext():
            report = batch_job(config=str(config_path), settings=args.set)
    except PrefectApiError as exc:
        error(exc)
        return 1
    except JobAborted as exc:  # Ctrl-C, a stop signal, a cancel in Prefect: batch.on_abort
        _stop(display)
        if isinstance(exc, JobCancelled) and exc.report is not None:
            print(summary(exc.report))
        error(exc)
        return 130 if exc.signal == signal.SIGINT else 1
    except BudgetRefused as exc:  # over budget.max_cost: nothing was sent
        _stop(display)
        error(exc)
        return 2
    except (JobError, BatchApiError) as exc:
        _stop(display)
        error(exc)
        return 1
    finally:
        _stop(display)
        if charts is not None:
            charts.join(5.0)  # not left in the JavaScript engine while the interpreter exits
    print(summary(report))
    cancelled = report["rows_by_status"].get("cancelled", 0)
    if cancelled:
        error(
            f"{cancelled} row(s) were not answered: their batch was cancelled while the job "
            f"ran. Answered rows are kept; run the job again to send the rest."
        )
        return 1
    return 0


def _no_heartbeats() -> Any:
    """Prefect's flow heartbeats off for a run on the temporary API: they let a server's
    automation mark a vanished run Crashed, which the temporary API has none of, and the
    flow's end waits for the heartbeat thread's next 1 s tick (0.5 s a run, on average)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    return temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


def _stop(display: Any) -> None:
    if display is not None:
        display.stop()


def _check_backend(config: Any, backend: str | None) -> None:
    """``--backend`` names what answers on the run's own local server (through
    TABLEBATCH_SERVER_BACKEND, as a run's parameters may not change ``api``); the llama
    backend needs the [llama] extra: both are checked before Prefect starts."""
    from tablebatch.jobs.errors import ConfigError

    named = config.api.backend if config.api is not None else None
    if backend and config.api is not None and not config.api.is_local:
        raise ConfigError(
            f"--backend {backend} is for the run's own local server, but the config's API "
            f"is {config.api.base_url}; leave --backend out, or set api.base_url to local."
        )
    if backend and named and named != backend:
        raise ConfigError(
            f"--backend {backend}, but the config says api.backend: {named}; give one of them."
        )
    if (backend or named) == "llama":
        from tablebatch.server.backends.llama import check_llama

        try:
            check_llama()
        except ValueError as exc:
            raise ConfigError(f"backend llama: {exc}") from exc
    if backend and not named:
        os.environ["TABLEBATCH_SERVER_BACKEND"] = backend


def cmd_plan(args: argparse.Namespace) -> int:
    """Show what a run would send, and send nothing."""
    from tablebatch.api.dialects import limits_of
    from tablebatch.jobs.build import within_limits
    from tablebatch.jobs.config import load_config, project_root
    from tablebatch.jobs.cost import Estimate, max_completion, mean_completion
    from tablebatch.jobs.errors import JobError
    from tablebatch.jobs.plan import plan_batches, plan_requests
    from tablebatch.jobs.preflight import read_input
    from tablebatch.jobs.prices import load_prices
    from tablebatch.jobs.tokens import counter_for, request_tokens

    if args.show < 0:
        error(f"--show {args.show}: give a number of requests, 0 or more")
        return 2
    try:
        config_path = _config_path(args.config)
        config = load_config(config_path, args.set)
        checked = read_input(config, config_path)
        prices = load_prices(project_root(config_path), config)
    except JobError as exc:
        error(exc)
        return 2
    table, ids, path = checked.table, checked.ids, checked.path
    provider = config.api.provider if config.api else "seed"
    if config.api is None or config.api.is_local:
        backend = (config.api.backend if config.api else None) or "offline"
        api = f"a local server ({backend} backend), in the {provider} dialect"
    else:
        api = f"{config.api.base_url} ({provider})"
    config = within_limits(config, limits_of(provider))  # shards fit the provider's batches
    print(f"{config.name} ({config.kind}): {table.num_rows} rows from {path}")
    print(f"  API: {api}")
    counter = counter_for(config)
    estimates: list[Estimate] = []
    for model in config.model_names:
        plan = plan_requests(table, config, ids, model)
        pending, earlier = plan.rows, None
        if not args.offline:  # what the API already answered is not sent again
            pending, note, earlier = _unanswered(config, config_path, plan)
            print(f"  {model}: {note}")
        batches: list[tuple[str, int, int]] = []
        requests = tokens = total_bytes = 0
        for planned in plan_batches(plan, config, rows=pending):  # as a run's shards do
            piece = planned.requests
            batches.append((planned.name, len(piece), piece.nbytes))
            requests += len(piece)
            tokens += sum(request_tokens(counter, piece))
            total_bytes += piece.nbytes
        print(
            f"  {model}: {requests} request(s), {len(plan.skipped)} skipped, "
            f"{len(batches)} batch(es), ~{tokens} prompt tokens, {total_bytes} bytes"
        )
        for name, count, nbytes in batches:
            print(f"    {name}: {count} requests, {nbytes} bytes")
        for custom_id, reason in list(plan.skipped.items())[:5]:
            print(f"    skipped {custom_id}: {reason}")
        mean = mean_completion(earlier) if earlier is not None else None
        guess = Estimate(
            model, requests, tokens, counter.name, prices.get(model), max_completion(config), mean
        )
        estimates.append(guess)
    second = config.kind_impl.second_stage()
    if second is not None:
        print(f"  then a {second.stage} batch per model to {second.model}")
    _print_cost(config, estimates, prices, second is not None)
    if args.show:
        _show(checked, args.show)
    print("Nothing was sent.")
    return 0


def _print_cost(config: Any, estimates: list[Any], prices: Any, judged: bool) -> None:
    """The estimate's cost lines: prompt and completion tokens, batch and real-time cost,
    the cap, and how to give a missing price."""
    from tablebatch.jobs.cost import add, money, raised_cap
    from tablebatch.jobs.prices import describe, price_hint

    cur = prices.currency
    total: float | None = 0.0
    worst: float | None = 0.0
    realtime: float | None = 0.0
    for e in estimates:
        if e.max_completion is None:
            bound = "no upper bound (params.max_tokens is not set)"
        else:
            bound = f"at most {e.worst_completion_tokens} ({e.max_completion} a request)"
        likely = (
            f"likely {e.completion_tokens} ({e.mean_completion:.1f} a request, the mean of "
            "earlier answers); "
            if e.mean_completion is not None
            else ""
        )
        print(f"  {e.model}: completion tokens: {likely}{bound}")
        price = describe(e.price) if e.price is not None else price_hint(e.model)
        print(f"  {e.model}: price: {price}")
        print(
            f"  {e.model}: cost: ~{money(e.cost(), cur)} at batch prices, "
            f"~{money(e.cost(batch=False), cur)} at real-time prices"
            + (
                f" (at most {money(e.cost(worst=True), cur)})"
                if e.mean_completion is not None
                else ""
            )
        )
        total = add(total, e.cost())
        worst = add(worst, e.cost(worst=True))
        realtime = add(realtime, e.cost(batch=False))
    counted = estimates[0].counter if estimates else "the 4-characters rule"
    print(
        f"  estimate: ~{money(total, cur)} at batch prices (~{money(realtime, cur)} real-time); "
        f"prompt tokens counted with {counted}"
        + ("; the judge's batches are not in it" if judged else "")
    )
    cap = config.budget.max_cost
    if cap is not None:
        if total is None:
            verdict = "cannot be checked (a price is unknown): a run is refused"
        elif total > cap:
            verdict = (
                f"the estimate is over it: a run is refused (raise it with --set "
                f"budget.max_cost={raised_cap(total)})"
            )
        else:
            verdict = "the estimate is within it"
        print(f"  budget.max_cost {money(cap, cur)}: {verdict}")


def _unanswered(config: Any, config_path: Any, plan: Any) -> tuple[Any, str, Any]:
    """The rows of ``plan`` whose request has no answer on the job's API yet (asked as a run
    would, changing nothing), a line saying what was found, and the answers found."""
    from flows.clients import open_client
    from tablebatch.api import BatchApiError
    from tablebatch.jobs.config import project_root
    from tablebatch.jobs.discover import discover, unanswered
    from tablebatch.jobs.result_cache import ResultCache, cache_folder
    from tablebatch.jobs.submit import StageRun

    root = project_root(config_path)
    api = config.api
    if (api is None or api.is_local) and not (root / ".tablebatch" / "server.db").exists():
        return plan.rows, "no earlier run on the local server: every request is new", None
    cache = ResultCache(cache_folder(root, config.name))  # read only what a run kept
    run = StageRun(config, "answer", plan.model, config.fingerprint(plan.model), cache=cache)
    try:
        with open_client(config, root, process=False) as client:
            found = discover(client, run, plan.rows, lambda _: set(), look_only=True)
    except BatchApiError as exc:
        return plan.rows, f"could not ask the API what it answered ({exc}); counting all", None
    pending = plan.rows.select(unanswered(plan.rows.ids, found.results, run.kind.retry_invalid))
    return (
        pending,
        f"{len(plan.rows) - len(pending)} of {len(plan.rows)} distinct request(s) already "
        "answered on the API "
        f"(not sent again); {len(pending)} to send",
        found.results,
    )


def _show(checked: Any, count: int) -> None:
    """The first ``count`` requests of the first model, as they would be sent."""
    import orjson

    from tablebatch.jobs.preflight import first_requests

    config = checked.config
    shown = first_requests(checked, count)
    others = config.model_names[1:]
    to = f" (the same to {', '.join(others)} but for the model)" if others else ""
    print(f"  the first {len(shown)} request(s) to {config.model_names[0]}{to}:")
    for request in shown:
        print(f"  --- {request['custom_id']}")
        payload = request.get("body", request.get("params"))
        text = orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode()
        print("\n".join("    " + line for line in text.splitlines()))


def cmd_validate(args: argparse.Namespace) -> int:
    """Check configs and their data as ``run`` would before sending; 2 if any is wrong."""
    from tablebatch.jobs.config import load_config
    from tablebatch.jobs.errors import DataError, JobError
    from tablebatch.jobs.preflight import preflight

    bad = 0
    for arg in args.configs:
        try:
            path = _config_path(arg)
            if args.config_only:
                load_config(path)
                print(f"ok: {arg} (config only: its data was not read)")
                continue
            checked = preflight(path)
        except DataError as exc:
            missing = "no such file" in str(exc) or "matches no file" in str(exc)
            hint = " (--config-only checks the config alone, without its data)"
            error(f"{exc}{hint if missing else ''}")
            bad += 1
            continue
        except JobError as exc:
            error(exc)
            bad += 1
            continue
        print(f"ok: {arg} ({checked.table.num_rows} rows in {checked.path} checked)")
    return 2 if bad else 0


def _config_path(arg: str) -> Path:
    """CONFIG|JOB as a config file (a job's name is looked up in configs/ of the project
    here); says on stderr when it lies outside this project, and which folder its
    relative paths use."""
    from tablebatch.jobs.config import project_root
    from tablebatch.jobs.lookup import find_config
    from tablebatch.jobs.preflight import root_note

    path = find_config(arg, project_root(Path.cwd() / "CONFIG"))
    note = root_note(path)
    if note:
        print(f"note: {note}", file=sys.stderr)
    return path


CONFIG_HELP = "a job config (e.g. configs/review-sentiment.yaml) or a job's name in configs/"


def add_parsers(sub: Any) -> None:
    """``run``, ``plan`` and ``validate``."""
    commands = {}
    for name, text, handler in (
        ("run", "run a job: load, send, wait, collect, join, write", cmd_run),
        (
            "plan",
            "show what a run would send (rows, requests, batches, tokens); send nothing",
            cmd_plan,
        ),
    ):
        command = sub.add_parser(name, help=text, description=text)
        command.add_argument("config", metavar="CONFIG|JOB", help=CONFIG_HELP)
        command.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config key (dotted, YAML value), e.g. --set batch.max_requests=500",
        )
        if name == "run":
            command.add_argument(
                "--backend",
                choices=("offline", "llama"),
                help="what answers on the run's own local server (api.backend): offline "
                "(the default) or llama (a real model on CPU; the [llama] extra)",
            )
        command.set_defaults(handler=handler)
        commands[name] = command
    loud = commands["run"].add_mutually_exclusive_group()
    loud.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="show Prefect's own log lines (every task's state, the run's URL) and the job's",
    )
    loud.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        help="show only the summary and errors (no progress)",
    )
    commands["plan"].add_argument(
        "--show",
        type=int,
        default=0,
        metavar="N",
        help="print the first N requests (system, messages, params) exactly as they would be "
        "sent, to check a prompt before money is spent",
    )
    commands["plan"].add_argument(
        "--offline",
        action="store_true",
        help="ask the API nothing: count every request, as if the job had never run",
    )
    validate = sub.add_parser(
        "validate",
        help="check job configs and their data as a run would, without sending",
        description="Check job configs, and read and check their data as run does before "
        "it sends anything (columns, ids, something to send, an API key). Exits 2 if any "
        "is wrong, as run would.",
    )
    validate.add_argument("configs", nargs="+", metavar="CONFIG|JOB", help=CONFIG_HELP)
    validate.add_argument(
        "--config-only",
        action="store_true",
        help="check the configs alone, without their data (a repository without data)",
    )
    validate.set_defaults(handler=cmd_validate)
