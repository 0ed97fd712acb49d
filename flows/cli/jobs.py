"""``tablebatch run`` and ``validate``: a job from its config, sent or checked (``plan``,
what a run would send, is flows/cli/plan.py's)."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import os
import signal
import threading
from typing import Any

from flows.cli import plan
from flows.cli.common import (
    CONFIG_HELP,
    arrow_without_pandas,
    config_arguments,
    config_file,
    error,
    no_tracebacks_for,
    quiet_prefect,
    summary,
)


def cmd_run(args: argparse.Namespace) -> int:
    """Run a job through the Prefect flow; 0 when it completed (failed rows are data)."""
    from flows.prefect_api import TemporaryPrefectApi, idle_seconds

    try:
        idle_seconds()
    except ValueError as exc:
        error(exc)
        return 2
    quiet_prefect()
    arrow_without_pandas()
    atexit.register(gc.freeze)  # runs last: the interpreter's exit need not walk every object
    gc.disable()  # until the imports are done: they make objects by the million, few garbage
    api = TemporaryPrefectApi()
    api.start()  # boots on the other core while the config and the table are checked
    try:
        return _run(args, api)
    finally:
        api.stop()
        gc.enable()


WARM_CHARTS_ROWS = 200_000  # tables up to this many rows warm the chart engine up early


class _Charts:
    """The report's chart engine and modules, made ready in a thread before the report
    needs them: vl-convert's JavaScript engine (~0.6 s the first time; it releases the GIL)
    while Prefect starts, then, once the flow's own imports are done (``go``), the report's
    modules (altair: ~0.2 s of imports, GIL-bound) and a first chart drawn with them while
    the run waits for its batches, instead of in series with Prefect's import or with the
    report."""

    def __init__(self) -> None:
        self._go = threading.Event()
        self._skip = False
        self.thread = threading.Thread(target=self._warm, name="tablebatch-warm-charts")
        self.thread.daemon = True
        self.thread.start()

    def go(self) -> None:
        """The flow's imports are done: import the report's modules beside the run (not
        beside another import, which could wait on a module the other is importing)."""
        self._go.set()

    def stop(self) -> None:
        """The run is over: no report to import for; wait for the engine's warm-up (not
        left in the JavaScript engine while the interpreter exits)."""
        self._skip = True
        self._go.set()
        self.thread.join(5.0)

    def _warm(self) -> None:
        try:
            import vl_convert

            vl_convert.vegalite_to_svg({"mark": "point", "data": {"values": [{}]}})
        except Exception:  # the report draws its charts anyway (and says if it cannot)
            pass
        self._go.wait()
        if not self._skip:  # on failure the report imports it again, and says what failed
            with contextlib.suppress(Exception):
                import tablebatch.report.build  # noqa: F401
                from tablebatch.report import charts
                from tablebatch.report.common import status_chart

                # a first chart of each kind costs more than the next (altair's schema
                # checks, vl-convert's bars, text and PNG): one drawn now, not in the report
                chart = status_chart({"rows_by_status": {"completed": 1}})
                charts.svg(chart)
                charts.png(chart)


def _run(args: argparse.Namespace, api: Any) -> int:
    from flows.cli.display import filter_console, progress_display
    from flows.prefect_api import PrefectApiError
    from tablebatch.api import BatchApiError
    from tablebatch.jobs.config import output_path, project_root
    from tablebatch.jobs.errors import BudgetRefused, JobAborted, JobCancelled, JobError
    from tablebatch.jobs.preflight import preflight

    mode = "quiet" if args.quiet else "verbose" if args.verbose else "normal"
    try:  # everything about the config and the data is checked before Prefect starts
        config_path = config_file(args.config)
        checked = preflight(config_path, args.set)
        _check_backend(checked.config, args.backend)
    except JobError as exc:
        error(exc)
        return 2
    name, rows, path = checked.config.name, checked.table.num_rows, checked.path
    local = checked.config.api is None or checked.config.api.is_local
    html = "://" not in output_path(checked.config, project_root(config_path))  # its charts
    from tablebatch.io import hand_over

    # the flow's load takes this table (one copy, one read) while the file is unchanged
    hand_over(checked.path, [checked.config.input.id_column], checked.table, checked.key)
    del checked
    display = progress_display(mode)
    if display is not None:
        display.print(f"{name}: {rows} rows in {path} checked")
    try:
        temporary = api.needed()  # sets PREFECT_API_URL: before Prefect is imported
    except PrefectApiError as exc:
        error(exc)
        return 1
    # a big table's run has time to spare and no memory to: its report starts the engine
    # when it draws the charts, after the join (~90 MB less for the whole run)
    charts = _Charts() if html and rows <= WARM_CHARTS_ROWS else None
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
        if charts is not None:
            charts.go()
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
            charts.stop()
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


def cmd_validate(args: argparse.Namespace) -> int:
    """Check configs and their data as ``run`` would before sending; 2 if any is wrong."""
    from tablebatch.jobs.config import load_config
    from tablebatch.jobs.errors import DataError, JobError
    from tablebatch.jobs.preflight import preflight

    bad = 0
    for arg in args.configs:
        try:
            path = config_file(arg)
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


def add_parsers(sub: Any) -> None:
    """``run``, ``plan`` (flows/cli/plan.py) and ``validate``."""
    text = "run a job: load, send, wait, collect, join, write"
    run = sub.add_parser("run", help=text, description=text)
    config_arguments(run)
    run.add_argument(
        "--backend",
        choices=("offline", "llama"),
        help="what answers on the run's own local server (api.backend): offline "
        "(the default) or llama (a real model on CPU; the [llama] extra)",
    )
    run.set_defaults(handler=cmd_run)
    loud = run.add_mutually_exclusive_group()
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
    plan.add_parsers(sub)  # here, so that the help lists run, plan, validate in that order
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
