"""The job flow: a config in, the table with its answers joined on out, plus a report.

Stages (DESIGN.md): load → build → shard → submit → wait → collect → retry failed
rows (a follow-up batch per attempt) → join → write. Each shard is submitted,
awaited and collected by its own chain of tasks, several shards at once; no task
is ever one row.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml
from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict, Field

from tablebatch.api import BatchClient, WaitTimeoutError
from tablebatch.io import resolve
from tablebatch.jobs.build import Plan, Template, column_texts, shard
from tablebatch.jobs.config import JobConfig, template_fields
from tablebatch.jobs.errors import JobFailed
from tablebatch.jobs.results import ModelAnswers
from tablebatch.jobs.submit import RowResult, batch_description, batch_name
from tasks.build import build_task
from tasks.finish import join_task, write_task
from tasks.load import load_config_task, load_task
from tasks.submit import collect_task, submit_task, wait_task

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
def open_client(config: JobConfig, root: Path) -> Iterator[BatchClient]:
    """A client for the config's API; without one, a local server for the run.

    The local server keeps its batches in ``<project>/.tablebatch/server.db``, so
    that a re-run finds what an earlier run submitted.
    """
    if config.api is not None:
        api = config.api
        options: dict[str, Any] = {"timeout": api.timeout_s, "max_retries": api.max_retries}
        if api.api_key_secret:
            from prefect.blocks.system import Secret

            key = Secret.load(api.api_key_secret).get()
            source = f"the Prefect Secret block {api.api_key_secret!r}"
            client = BatchClient(api.base_url, key, key_source=source, **options)
        else:
            client = BatchClient.from_env(api.base_url, api.api_key_env, **options)
        with client:
            yield client
        return
    from tablebatch.server import ServerSettings, serve_in_thread

    folder = root / ".tablebatch"
    folder.mkdir(exist_ok=True)
    key = secrets.token_urlsafe(24)  # the run's own server answers the run alone
    settings = ServerSettings(db=str(folder / "server.db"), api_keys=[key])
    with serve_in_thread(settings) as server, BatchClient(server.url, key) as client:
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


def _check_budget(config: JobConfig, sent: list[tuple[str, bytes]], results: dict) -> None:
    failed = [
        r
        for r in (results[c] for c, _ in sent)
        if r.status == "failed" and not (r.error or "").startswith("cancelled:")
    ]  # rows stopped by a cancel are no sign of a systemic failure
    budget = config.batch.error_budget
    if not failed or len(failed) <= budget * len(sent):
        return
    if len(failed) < 10 and len(failed) < len(sent):
        return  # too few to tell a pattern from bad luck
    error, count = Counter(r.error or "no error text" for r in failed).most_common(1)[0]
    raise Systemic(
        f"{len(failed)} of {len(sent)} requests failed ({len(failed) / len(sent):.0%}, over "
        f"batch.error_budget {budget:.0%}); the most common error, in {count} row(s): "
        f"{error!r}. This looks systemic, so the job stops instead of retrying row by row: "
        "fix the cause (model name, API key, quota, prompt) and run again. Answered rows are "
        "kept and will not be sent again."
    )


def run_attempts(
    client: BatchClient,
    config: JobConfig,
    items: list[tuple[str, bytes]],
    model: str,
    stage: str,
    fingerprint: str,
    batches: list[dict[str, Any]],
) -> tuple[dict[str, RowResult], dict[str, int]]:
    """Send ``items`` in shards, then the rows that failed again, up to ``max_attempts``.

    Rows of a batch that was cancelled while this run waited are marked
    ``cancelled`` and not sent again (someone meant to stop them); rows of a batch
    found already cancelled are sent again: a later run sends only the rest.
    Raises ``Systemic`` (results so far in ``.args[1:]``) past the error budget.
    """
    logger = get_run_logger()
    results: dict[str, RowResult] = {}
    attempts: dict[str, int] = {}
    pending = items
    for attempt in range(1, config.batch.max_attempts + 1):
        shards = shard(pending, config)
        chains = []
        for index, part in enumerate(shards):
            name = batch_name(config, stage, fingerprint, attempt, index)
            description = batch_description(config, model, stage, attempt, len(part))
            submitted = submit_task.submit(client, name, model, part, description)
            ended = wait_task.submit(client, submitted, config)
            collected = collect_task.submit(client, ended, [c for c, _ in part])
            chains.append((submitted, ended, collected))
        for submitted, ended, collected in chains:
            found = submitted.result()  # an error of an early stage surfaces as itself
            batch = ended.result()
            batches.append(
                {
                    "id": batch.id,
                    "name": batch.name,
                    "status": batch.status,
                    "model": model,
                    "stage": stage,
                    "attempt": attempt,
                    "requests": batch.request_count,
                }
            )
            stopped_now = batch.status == "cancelled" and found.status != "cancelled"
            for custom_id, result in collected.result().items():
                if stopped_now and result.status == "failed":
                    result.status = "cancelled"
                results[custom_id] = result
                attempts[custom_id] = attempt
        try:
            _check_budget(config, pending, results)
        except Systemic as exc:
            raise Systemic(str(exc), results, attempts) from None
        pending = [item for item in pending if results[item[0]].status == "failed"]
        if not pending:
            break
        if attempt < config.batch.max_attempts:
            logger.info("%d row(s) failed; attempt %d sends them again", len(pending), attempt + 1)
    return results, attempts


def judge_items(
    config: JobConfig, table: Any, answers: ModelAnswers, model_index: int
) -> list[tuple[str, bytes]]:
    """Requests to the judge model: one per answered row, over the judge template."""
    judge = config.judge
    assert judge is not None
    template = Template(judge.template)
    columns = set(template_fields(judge.template)) - {"prompt", "answer", "reference"}
    values = {c: column_texts(table, c) for c in columns}
    references = column_texts(table, config.reference_column or "")
    items = []
    for index, custom_id in enumerate(answers.plan.custom_ids):
        result = answers.results.get(custom_id)
        if result is None or result.status != "completed":
            continue
        row = {c: values[c][index] for c in columns}
        row |= {
            "prompt": answers.plan.prompts.get(custom_id, ""),
            "answer": result.answer or "",
            "reference": references[index],
        }
        messages = [{"role": "user", "content": template.render(row)}]
        if judge.system:
            messages.insert(0, {"role": "system", "content": judge.system})
        body = {"model": judge.model, "messages": messages, "temperature": 0}
        judge_id = f"{custom_id}--m{model_index}"
        items.append((judge_id, orjson.dumps({"custom_id": judge_id, "body": body})))
    return items


def output_path(config: JobConfig, root: Path) -> str:
    """Where the output goes: ``output.path``, or ``data/output/<name>.parquet``."""
    return resolve(config.output.path or f"data/output/{config.name}.parquet", root)


@flow(
    name="tablebatch-job",
    flow_run_name=_run_name,
    task_runner=ThreadPoolTaskRunner(max_workers=8),
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

    Returns the report, which is also written next to the output.
    """
    config_arg = config
    path = config_file(config)
    updates = overrides.updates() if overrides is not None else None
    config, root = load_config_task(str(path), settings, updates)
    _check_parameters(config, root, updates, settings)
    logger = get_run_logger()
    table, ids = load_task(config, root)
    path = output_path(config, root)
    batches: list[dict[str, Any]] = []
    per_model: list[ModelAnswers] = []
    judging = config.scoring == "judge" and config.judge is not None
    stopped: str | None = None
    try:
        with open_client(config, root) as client:
            run_config = _local_polls(config) if config.api is None else config
            for model in config.model_names:
                plan: Plan = build_task(config, table, ids, model, keep_prompts=judging)
                try:
                    results, attempts = run_attempts(
                        client,
                        run_config,
                        plan.items,
                        model,
                        "answer",
                        config.fingerprint(model),
                        batches,
                    )
                except Systemic as exc:
                    stopped, results, attempts = exc.args
                per_model.append(ModelAnswers(plan, results, attempts))
                if stopped:
                    break
            if judging and config.judge is not None and not stopped:
                for k, answers in enumerate(per_model):
                    items = judge_items(config, table, answers, k)
                    judge_print = config.fingerprint(config.judge.model, answers.plan.model)
                    judged, _ = run_attempts(
                        client,
                        run_config,
                        items,
                        config.judge.model,
                        "judge",
                        judge_print,
                        batches,
                    )
                    answers.judged = {
                        custom_id: judged[f"{custom_id}--m{k}"]
                        for custom_id in answers.plan.custom_ids
                        if f"{custom_id}--m{k}" in judged
                    }
    except WaitTimeoutError as exc:
        raise JobFailed(
            f"{config.name}: batch {exc.batch.id} ({exc.batch.name}) is still "
            f"{exc.batch.status} after {exc.waited_s:.0f} s (batch.max_wait_s), with "
            f"{exc.batch.completed_count + exc.batch.failed_count} of {exc.batch.request_count} "
            "requests ended. It goes on on the server; to collect it and finish the job, run "
            f"the same job again: tablebatch run {config_arg}"
        ) from None
    output = join_task(table, config, per_model)
    report = write_task(config, table, output, path, batches)
    logger.info("%s: wrote %d row(s) to %s", config.name, output.num_rows, path)
    if stopped:
        raise JobFailed(f"{config.name}: {stopped} The output, with the answered rows: {path}")
    return report
