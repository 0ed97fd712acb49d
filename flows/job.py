"""The job flow: a config in, the table with its answers joined on out, plus a report.

Stages (DESIGN.md): load → build → shard → submit → wait → collect → retry failed
rows (a follow-up batch per attempt) → join → write. Each shard is submitted,
awaited and collected by its own chain of tasks, several shards at once; no task
is ever one row.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import yaml
from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.states import Cancelled
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote
from pydantic import BaseModel, ConfigDict, Field

from flows.manage import follow_cancellation
from tablebatch.api import BatchAPI, WaitTimeoutError
from tablebatch.api.dialects import open_batch_api
from tablebatch.api.http import api_key_from_env
from tablebatch.io import resolve
from tablebatch.jobs.build import (
    Plan,
    Renderer,
    Requests,
    Template,
    column_texts,
    within_limits,
)
from tablebatch.jobs.config import JobConfig, template_fields
from tablebatch.jobs.errors import JobAborted, JobCancelled, JobFailed
from tablebatch.jobs.guard import RunGuard, as_stopped, stopping, unsent
from tablebatch.jobs.progress import Progress
from tablebatch.jobs.results import ModelAnswers
from tablebatch.jobs.spool import Spool, text_column
from tablebatch.jobs.submit import (
    BatchWatcher,
    Sendable,
    ShardOutcome,
    batch_name,
    batch_prefix,
    existing_batches,
    results_table,
)
from tasks.build import build_task
from tasks.finish import write_task
from tasks.load import load_config_task, load_task
from tasks.submit import shard_task

PROGRESS_EVERY_S = 5.0  # the attempt's progress bar and log line, at most this often
LOCAL_POLL_S = (0.1, 1.0)  # first and longest poll interval against the local server
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
        }
        return {keys[k]: v for k, v in self.model_dump(exclude_none=True).items()}


def config_file(config: str) -> Path:
    """The config's path: as given, else under the project root (a worker may run elsewhere)."""
    path = Path(config).expanduser()
    if path.is_absolute() or path.exists():
        return path
    return PROJECT_ROOT / path


def _check_parameters(
    config: JobConfig, root: Path, updates: dict[str, Any] | None, settings: list[str] | None
) -> None:
    """What a run's parameters (the UI's form) may change: not the API (its URL and key
    stay as the config file says), and no path outside the project."""
    from tablebatch.jobs.errors import ConfigError

    keys = set(updates or {}) | {s.partition("=")[0].strip() for s in settings or []}
    if any(k == "api" or k.startswith("api.") for k in keys):
        raise ConfigError(
            "The API (api.*) cannot be changed by a run's parameters; change it in the config file."
        )
    for key, value in (("input.path", config.input.path), ("output.path", config.output.path)):
        if key not in keys or value is None:
            continue
        target = Path(resolve(value, root)).resolve()
        if "://" in value or not target.is_relative_to(root.resolve()):
            raise ConfigError(
                f"{key} {value!r} from the run's parameters leaves the project folder {root}; "
                "parameters may only name paths inside it (the config file may name others)."
            )


def _run_name() -> str:
    """ "<job> · <table>", so that a run's name says which job and which data it ran."""
    from prefect.runtime import flow_run

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


@contextmanager
def open_client(
    config: JobConfig | None,
    root: Path,
    sleep: Callable[[float], None] = time.sleep,
    *,
    process: bool = True,
) -> Iterator[BatchAPI]:
    """A client of the config's API, in its provider's dialect; without one (or with
    ``base_url: local``), a local server for the run, speaking that dialect.

    The local server keeps its batches in ``<project>/.tablebatch/server.db``, so
    that a re-run finds what an earlier run submitted. ``sleep`` is how the client
    waits (between polls and retries). ``process=False`` serves that database without
    answering (to look at a job's batches, or cancel them, beside its run's own server).
    """
    api = config.api if config is not None else None
    options: dict[str, Any] = {"sleep": sleep}
    if api is not None:
        options |= {"timeout": api.timeout_s, "max_retries": api.max_retries}
        if api.provider == "anthropic":
            ledger = api.ledger or ".tablebatch/anthropic-batches.jsonl"
            options |= {"ledger": resolve(ledger, root), "max_tokens": api.max_tokens}
    if api is not None and not api.is_local:
        assert api.base_url is not None and api.api_key_env is not None
        if api.api_key_secret:
            from prefect.blocks.system import Secret

            key = Secret.load(api.api_key_secret).get()
            source = f"the Prefect Secret block {api.api_key_secret!r}"
        else:
            key = api_key_from_env(api.api_key_env, api.base_url)
            source = f"${api.api_key_env}"
        with open_batch_api(api.provider, api.base_url, key, key_source=source, **options) as c:
            yield c
        return
    from tablebatch.server import ServerSettings, serve_in_thread

    provider = api.provider if api is not None else "seed"
    folder = root / ".tablebatch"
    folder.mkdir(exist_ok=True)
    key = secrets.token_urlsafe(24)  # the run's own server answers the run alone
    backend = api.backend if api is not None and api.backend and process else "offline"
    settings = ServerSettings(
        db=str(folder / "server.db"), api_keys=[key], process=process, backend=backend
    )
    with serve_in_thread(settings) as server:
        url = server.url if provider == "seed" else f"{server.base_url}/{provider}/v1"
        with open_batch_api(provider, url, key, **options) as client:
            yield client


def _local_polls(config: JobConfig) -> JobConfig:
    first, longest = LOCAL_POLL_S
    batch = config.batch.model_copy(
        update={
            "poll_interval_s": min(config.batch.poll_interval_s, first),
            "max_poll_interval_s": min(config.batch.max_poll_interval_s, longest),
        }
    )
    return config.model_copy(update={"batch": batch})


class Systemic(Exception):
    """Too many requests of an attempt failed: the job stops instead of retrying them."""


def _check_budget(config: JobConfig, attempt: pa.Table) -> None:
    failed_mask = pc.and_(
        pc.equal(attempt["status"], "failed"),
        pc.invert(pc.fill_null(pc.starts_with(attempt["error"], "cancelled:"), False)),
    )  # rows stopped by a cancel are no sign of a systemic failure
    failed = attempt.filter(failed_mask)
    sent = attempt.num_rows
    budget = config.batch.error_budget
    if not failed.num_rows or failed.num_rows <= budget * sent:
        return
    if failed.num_rows < 10 and failed.num_rows < sent:
        return  # too few to tell a pattern from bad luck
    counts = pc.value_counts(pc.fill_null(failed["error"], "no error text")).to_pylist()
    top = max(counts, key=lambda c: c["counts"])
    raise Systemic(
        f"{failed.num_rows} of {sent} requests failed ({failed.num_rows / sent:.0%}, over "
        f"batch.error_budget {budget:.0%}); the most common error, in {top['counts']} row(s): "
        f"{top['values']!r}. This looks systemic, so the job stops instead of retrying row by "
        "row: fix the cause (model name, API key, quota, prompt) and run again. Answered rows "
        "are kept and will not be sent again."
    )


def _merge(final: pa.Table | None, attempt: pa.Table) -> pa.Table:
    """Results so far, the newest attempt winning for the rows it holds."""
    if final is None:
        return attempt
    older = final.filter(pc.invert(pc.is_in(final["custom_id"], value_set=attempt["custom_id"])))
    return pa.concat_tables([older, attempt])


def _attempt_progress(
    config: JobConfig, model: str, stage: str, attempt: int, total: int
) -> Progress:
    """One progress bar (a Prefect progress artifact) and a periodic log line for all the
    batches of an attempt (its snapshots also go to the ``tablebatch.progress`` logger)."""
    artifact = create_progress_artifact(
        progress=0.0,
        description=f"{config.name}: {stage} requests to {model}, attempt {attempt}, ended",
    )

    def report(ended: int, total: int) -> None:
        update_progress_artifact(artifact, progress=100.0 * ended / max(total, 1))

    return Progress(
        total,
        report,
        every_s=PROGRESS_EVERY_S,
        job=config.name,
        stage=stage,
        model=model,
        attempt=attempt,
    )


def run_attempts(
    client: BatchAPI,
    config: JobConfig,
    items: Sendable,
    model: str,
    stage: str,
    fingerprint: str,
    batches: list[dict[str, Any]],
    run: str = "",
    spool: Spool | None = None,
) -> pa.Table:
    """Send ``items`` in shards, then the rows that failed again, up to ``max_attempts``;
    returns the results (with an ``attempts`` column).

    Each shard is one task that renders, submits, waits for and collects its batch;
    at most ``batch.concurrency`` run at once, so that rendered requests and polls stay
    bounded however many rows there are. Rows of a batch that was cancelled while this
    run waited are marked ``cancelled`` and not sent again (someone meant to stop them);
    rows of a batch found already cancelled are sent again: a later run sends only the
    rest. Raises ``Systemic(message, results so far)`` past the error budget.
    """
    logger = get_run_logger()
    final: pa.Table | None = None
    pending: Sendable = items
    size = config.batch.max_requests
    for attempt in range(1, config.batch.max_attempts + 1):
        if not len(pending):
            break
        prefix = batch_prefix(config, stage, fingerprint, attempt)
        existing = quote(MappingProxyType(existing_batches(client, prefix)))
        progress = _attempt_progress(config, model, stage, attempt, len(pending))
        watcher = BatchWatcher(client, prefix, config)
        window: deque[Any] = deque()
        outcomes: list[ShardOutcome] = []
        for index, start in enumerate(range(0, len(pending), size)):
            if index and stopping():  # a stopped run sends no further shard
                break
            if len(window) >= config.batch.concurrency:
                outcomes.append(window.popleft().result())
            name = batch_name(config, stage, fingerprint, attempt, index)
            part = pending.slice(start, size)
            window.append(
                shard_task.submit(
                    client,
                    config,
                    part,
                    name,
                    model,
                    stage,
                    attempt,
                    existing,
                    progress,
                    watcher,
                    spool,
                    run,
                )
            )
        while window:
            outcomes.append(window.popleft().result())
        progress.finish()
        for outcome in outcomes:
            batches.extend(outcome.batches)
        now = pa.concat_tables([o.results for o in outcomes])
        now = now.append_column("attempts", pa.array([attempt] * now.num_rows, pa.int32()))
        final = _merge(final, now)
        try:
            _check_budget(config, now)
        except Systemic as exc:
            raise Systemic(str(exc), final) from None
        failed = now.filter(pc.equal(now["status"], "failed"))["custom_id"]
        if not len(failed) or stopping():  # a stopped run starts no further attempt
            break
        pending = pending.select(failed)
        if attempt < config.batch.max_attempts:
            logger.info("%d row(s) failed; attempt %d sends them again", len(failed), attempt + 1)
    if final is None:
        final = results_table().append_column("attempts", pa.array([], pa.int32()))
    return final


def judge_items(config: JobConfig, table: Any, answers: ModelAnswers, model_index: int) -> Requests:
    """Requests to the judge model: one per answered row, over the judge template."""
    judge = config.judge
    assert judge is not None
    template = Template(judge.template)
    columns = set(template_fields(judge.template)) - {"prompt", "answer", "reference"}
    custom_ids = answers.plan.custom_ids
    done = answers.results.filter(pc.equal(answers.results["status"], "completed"))
    rows = pc.indices_nonzero(pc.is_in(custom_ids, value_set=done["custom_id"]))
    texts = text_column(done, "answer", answers.spool).to_pylist()
    answered = dict(zip(done["custom_id"].to_pylist(), texts, strict=True))
    judged = table.take(rows)
    values = {c: column_texts(judged, c) for c in columns}
    references = column_texts(judged, config.reference_column or "")
    prompts = Renderer(config, answers.plan.model).prompts(judged)
    pairs = []
    for index, custom_id in enumerate(custom_ids.take(rows).to_pylist()):
        row = {c: values[c][index] for c in columns}
        row |= {
            "prompt": prompts[index],
            "answer": answered[custom_id] or "",
            "reference": references[index],
        }
        messages = [{"role": "user", "content": template.render(row)}]
        if judge.system:
            messages.insert(0, {"role": "system", "content": judge.system})
        body = {"model": judge.model, "messages": messages, "temperature": 0}
        judge_id = f"{custom_id}--m{model_index}"
        pairs.append((judge_id, orjson.dumps({"custom_id": judge_id, "body": body})))
    return Requests.from_pairs(pairs)


def _timeout_message(
    config: JobConfig, exc: WaitTimeoutError, guard: RunGuard, config_arg: str
) -> str:
    """Which batch the run gave up on, what ``batch.on_timeout`` did, and how to go on."""
    batch = exc.batch
    ended = batch.completed_count + batch.failed_count
    head = (
        f"{config.name}: batch {batch.id} ({batch.name}) is still {batch.status} after "
        f"{exc.waited_s:.0f} s (batch.max_wait_s), with {ended} of {batch.request_count} "
        "requests ended."
    )
    outcome = guard.timeout_outcome
    if guard.cancel_error is not None:
        return (
            f"{head} batch.on_timeout is cancel, but cancelling the run's batches failed "
            f"({guard.cancel_error}): they may go on; stop them with tablebatch cancel "
            f"{config.name}, or collect them with tablebatch run {config_arg}"
        )
    if outcome is None:  # batch.on_timeout: keep
        return (
            f"{head} It goes on on the server (batch.on_timeout: keep); to collect it and "
            f"finish the job, run the same job again: tablebatch run {config_arg} "
            f"(tablebatch status {config.name} shows how far it got)"
        )
    still = outcome.not_ended
    later = f" ({len(still)} still cancelling: tablebatch status {config.name})" if still else ""
    return (
        f"{head} batch.on_timeout is cancel: {len(outcome.batches)} batch(es) of the run were "
        f"cancelled{later}; {outcome.answered} row(s) answered are kept on the API, "
        f"{outcome.stopped} were stopped. To collect the answered rows and send only the rest, "
        f"run the same job again: tablebatch run {config_arg}"
    )


def output_path(config: JobConfig, root: Path) -> str:
    """Where the output goes: ``output.path``, or ``data/output/<name>.parquet``."""
    return resolve(config.output.path or f"data/output/{config.name}.parquet", root)


@flow(
    name="tablebatch-job",
    flow_run_name=_run_name,
    task_runner=ThreadPoolTaskRunner(max_workers=64),  # batch.concurrency bounds the shards
)
def batch_job(
    config: str,
    overrides: JobOverrides | None = None,
    settings: list[str] | None = None,
) -> dict[str, Any]:
    """Run an LLM batch job over a table, as a job config describes it.

    Args:
        config: The job config, e.g. configs/review-sentiment.yaml (relative to the
            project root).
        overrides: Changes for this run only; empty fields keep the config's values.
        settings: Further changes as key=value, like `tablebatch run --set`
            (e.g. batch.poll_interval_s=30).

    Returns the report, which is also written next to the output. A run that is stopped
    (Ctrl-C, a stop signal, a cancel in Prefect) ends Cancelled: calling the flow then
    raises ``JobCancelled`` (its batches cancelled, the answered rows written, with the
    report) or ``JobAborted`` (``batch.on_abort: keep``: its batches go on).
    """
    started = time.perf_counter()
    run = uuid.uuid4().hex  # the key of this run's stage timings
    config_arg = config
    path = config_file(config)
    updates = overrides.updates() if overrides is not None else None
    config, root = load_config_task(str(path), settings, updates)
    _check_parameters(config, root, updates, settings)
    table, ids = load_task(config, root, run)
    path = output_path(config, root)
    spool = Spool(root / ".tablebatch" / "spool" / run)  # answers wait on disk, not in memory
    try:
        report = _run_and_write(config, config_arg, root, table, ids, path, spool, run, started)
    except JobAborted as exc:  # a stopped run ends Cancelled; calling the flow raises exc
        return Cancelled(message=str(exc), data=exc)
    finally:
        spool.remove()
    return report


def _run_and_write(
    config: JobConfig,
    config_arg: str,
    root: Path,
    table: pa.Table,
    ids: pa.Array,
    path: str,
    spool: Spool,
    run: str,
    started: float,
) -> dict[str, Any]:
    """Send every model's requests (and the judge's), then join, write and report."""
    logger = get_run_logger()
    batches: list[dict[str, Any]] = []
    per_model: list[ModelAnswers] = []
    judging = config.scoring == "judge" and config.judge is not None
    stopped: str | None = None
    guard = RunGuard(config)  # Ctrl-C, a stop signal, a cancel in Prefect: batch.on_abort
    try:
        with (
            open_client(config, root, guard.sleep) as client,
            guard.protect(client),
            follow_cancellation(guard),
        ):
            local = config.api is None or config.api.is_local
            run_config = within_limits(_local_polls(config) if local else config, client.limits)
            for model in config.model_names:
                plan: Plan = build_task(config, table, ids, model, run=run)
                if guard.aborted:  # stopped before anything was sent
                    per_model.append(ModelAnswers(plan, unsent(plan.rows.ids), spool=spool))
                    break
                try:
                    results = run_attempts(
                        client,
                        run_config,
                        plan.rows,
                        model,
                        "answer",
                        config.fingerprint(model),
                        batches,
                        run,
                        spool,
                    )
                except Systemic as exc:
                    stopped, results = exc.args
                if guard.aborted:  # rows stopped by its cancel, or never sent: cancelled
                    results = as_stopped(results, plan.rows.ids)
                per_model.append(ModelAnswers(plan, results, spool=spool))
                if stopped or guard.aborted:
                    break
            if judging and config.judge is not None and not stopped and not guard.aborted:
                for k, answers in enumerate(per_model):
                    if guard.aborted:
                        break
                    items = judge_items(config, table, answers, k)
                    judge_print = config.fingerprint(config.judge.model, answers.plan.model)
                    judged = run_attempts(
                        client,
                        run_config,
                        items,
                        config.judge.model,
                        "judge",
                        judge_print,
                        batches,
                        run,
                        spool,
                    )
                    prefix = pc.utf8_slice_codeunits(judged["custom_id"], 0, -len(f"--m{k}"))
                    answers.judged = judged.set_column(0, "custom_id", prefix)
    except WaitTimeoutError as exc:
        raise JobFailed(_timeout_message(config, exc, guard, config_arg)) from None
    except JobAborted:  # batch.on_abort: keep — nothing to write, the batches go on
        raise JobAborted(guard.message(), signal=guard.signal) from None
    report = write_task(config, table, per_model, path, batches, run, time.perf_counter() - started)
    logger.info("%s: wrote %d row(s) to %s", config.name, report["output_rows"], path)
    if guard.aborted:
        message = f"{guard.message()} The output, with the answered rows: {path}"
        raise JobCancelled(message, report, signal=guard.signal)
    if stopped:
        raise JobFailed(f"{config.name}: {stopped} The output, with the answered rows: {path}")
    return report
