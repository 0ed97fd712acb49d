"""A job's stages end to end: each model's answers, then (where the kind has one) the second
stage over them, under the run's guard. Plain Python, given how to plan a model's rows
and how to send a shard (the flow gives Prefect tasks)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from tablebatch.api import BatchAPI, Limits, WaitTimeoutError
from tablebatch.io import release_memory
from tablebatch.jobs.attempts import ProgressFor, SendShard, StageOutcome, Systemic, run_attempts
from tablebatch.jobs.build import Sendable, shard_rows, within_limits
from tablebatch.jobs.cost import (
    Meter,
    ShardCosts,
    Tokens,
    estimate,
    max_completion,
    money,
    raised_cap,
)
from tablebatch.jobs.discover import Listing, discover, list_stage, unanswered
from tablebatch.jobs.errors import BudgetRefused
from tablebatch.jobs.guard import RunGuard
from tablebatch.jobs.join import ModelAnswers
from tablebatch.jobs.plan import Plan
from tablebatch.jobs.prices import PriceTable, price_hint
from tablebatch.jobs.result_cache import ResultCache
from tablebatch.jobs.rows import as_stopped, best, unsent
from tablebatch.jobs.schema import JobConfig
from tablebatch.jobs.spool import Spool
from tablebatch.jobs.submit import Shard, StageRun
from tablebatch.jobs.timing import Timings
from tablebatch.jobs.tokens import Counter, counter_for

PlanFor = Callable[[str], Plan]  # a model -> what to send it
LOCAL_POLL_S = (0.1, 1.0)  # first and longest poll interval against the run's own server


def run_settings(config: JobConfig, limits: Limits, local: bool) -> JobConfig:
    """The config as the run sends it: batches within the API's limits and, against the
    run's own local server, polls as often as it answers."""
    if local:
        first, longest = LOCAL_POLL_S
        polls = {
            "poll_interval_s": min(config.batch.poll_interval_s, first),
            "max_poll_interval_s": min(config.batch.max_poll_interval_s, longest),
        }
        config = config.model_copy(update={"batch": config.batch.model_copy(update=polls)})
    return within_limits(config, limits)


@dataclass
class JobOutcome:
    """What the run's stages came to: every model's answers, the batches, the requests sent
    now and found already on the API, and why the run stopped early (a systemic failure)."""

    per_model: list[ModelAnswers] = field(default_factory=list)
    batches: list[dict[str, Any]] = field(default_factory=list)
    sent: int = 0
    found: int = 0
    stopped: str | None = None
    tokens: dict[str, int] = field(default_factory=lambda: {"prompt": 0, "completion": 0})
    spend: dict[str, Tokens] = field(default_factory=dict)  # model -> this run's tokens

    def add(self, stage: StageOutcome) -> None:
        """Count a stage's batches and requests."""
        self.batches.extend(stage.batches)
        self.sent += stage.sent
        self.found += stage.found

    def spent(self, paid: Tokens, model: str) -> None:
        """Count the tokens of the requests this run's attempts sent to ``model`` (not those
        of answers collected from a batch an earlier run filled)."""
        self.tokens["prompt"] += paid.prompt
        self.tokens["completion"] += paid.completion
        self.spend[model] = self.spend.get(model, Tokens()) + paid

    @property
    def requests(self) -> dict[str, int]:
        """Requests sent by this run, and answers found already on the API (sent by an
        earlier run, not paid again)."""
        return {"sent": self.sent, "found": self.found}


@dataclass
class JobRun:
    """What the stages of one run share."""

    client: BatchAPI
    config: JobConfig  # the run's (within the API's limits)
    guard: RunGuard
    send: SendShard
    spool: Spool | None = None
    timings: Timings = field(default_factory=Timings)
    cache: ResultCache | None = None
    progress_for: ProgressFor | None = None
    log: Callable[[str], None] | None = None
    prices: PriceTable = field(default_factory=PriceTable)
    meter: Meter | None = None  # budget.max_cost: what the run spent and has in flight
    _counter: Counter | None = None

    def __post_init__(self) -> None:
        if self.meter is None and self.config.budget.max_cost is not None:
            self.meter = Meter(self.config.budget.max_cost)

    @property
    def counter(self) -> Counter:
        """How the run counts prompt tokens before sending (for the cap)."""
        if self._counter is None:
            self._counter = counter_for(self.config)
        return self._counter

    def costs(self, run: StageRun) -> ShardCosts | None:
        """How the cap prices the stage's shards (None: no cap)."""
        price = self.prices.get(run.model)
        bound = max_completion(self.config)
        second = self.config.kind_impl.second_stage()
        if run.stage != "answer" and second is not None:  # its own bound, not the answers'
            bound = second.max_tokens
        if self.meter is None or price is None or bound is None:
            return None
        return ShardCosts(self.meter, price, self.counter, bound, self.prices.currency)

    def stage(self, stage: str, model: str, fingerprint: str) -> StageRun:
        """The run of one stage for one model."""
        return StageRun(
            self.config,
            stage,  # type: ignore[arg-type]
            model,
            fingerprint,
            self.spool,
            self.timings,
            self.cache,
        )

    def attempts(self, run: StageRun, items: Any) -> StageOutcome:
        """Every attempt of one stage."""
        return run_attempts(
            self.client, run, items, self.send, self.progress_for, self.log, self.costs(run)
        )


def run_stages(job: JobRun, table: pa.Table, plan_for: PlanFor) -> JobOutcome:
    """Send every model's requests, then the second stage's; a stopped run (the guard) ends
    with its answered rows, the others ``cancelled``; a systemic failure ends the stages."""
    config, guard = job.config, job.guard
    outcome = JobOutcome()
    ready = _within_budget(job, plan_for) if job.meter is not None else {}
    for model in config.model_names:
        listing = None
        if model in ready:
            plan, found = ready[model]
        else:
            (plan, listing), found = _planned(job, model, plan_for), None
        if guard.aborted:  # stopped before anything was sent
            outcome.per_model.append(ModelAnswers(plan, unsent(plan.rows.ids), spool=job.spool))
            break
        run = job.stage("answer", model, config.fingerprint(model))
        results = _stage(job, run, plan.rows, outcome, found, listing)
        if guard.aborted:  # rows stopped by its cancel, or never sent: cancelled
            results = as_stopped(results, plan.rows.ids)
        outcome.per_model.append(ModelAnswers(plan, results, spool=job.spool))
        if outcome.stopped or guard.aborted:
            return outcome
    second = config.kind_impl.second_stage()
    if second is None:
        return outcome
    for index, answers in enumerate(outcome.per_model):
        if guard.aborted or outcome.stopped:
            break
        items, row_ids = second.requests(table, answers, index)
        run = job.stage(second.stage, second.model, second.fingerprint(answers.plan.model))
        answers.second = _stage(job, run, items, outcome)
        answers.second_ids = row_ids
    return outcome


def _within_budget(job: JobRun, plan_for: PlanFor) -> dict[str, tuple[Plan, StageOutcome]]:
    """Each model's plan and the answers already on the API, once the estimate of what the
    run would send now is within ``budget.max_cost``; else ``BudgetRefused`` (nothing
    sent). A second stage (a judge) is not in the estimate: the meter caps it as it goes."""
    config = job.config
    cap = config.budget.max_cost or 0.0
    ready: dict[str, tuple[Plan, StageOutcome]] = {}
    total = 0.0
    lines = []
    for model in config.model_names:
        plan, listing = _planned(job, model, plan_for)
        run = job.stage("answer", model, config.fingerprint(model))
        found = _discover(job, run, plan.rows, listing)
        pending = plan.rows.select(
            unanswered(plan.rows.ids, found.results, run.kind.retry_invalid, found.exhausted)
        )
        ready[model] = (plan, found)
        guess = estimate(config, model, pending, job.prices, job.counter, found.results)
        cost = guess.cost()
        if cost is None:
            raise BudgetRefused(
                f"{config.name}: budget.max_cost is set, but the cost of this run cannot be "
                f"known: {price_hint(model)}"
            )
        total += cost
        lines.append(f"{model}: {guess.requests} request(s), ~{money(cost)}")
    second = config.kind_impl.second_stage()
    if second is not None and job.prices.get(second.model) is None:  # the meter could not cap it
        raise BudgetRefused(
            f"{config.name}: budget.max_cost is set, but the cost of its {second.stage} "
            f"cannot be known: {price_hint(second.model)}"
        )
    if second is not None and second.max_tokens is None:  # nor bound its answers
        raise BudgetRefused(
            f"{config.name}: budget.max_cost is set, but nothing bounds the length of its "
            f"{second.stage}'s answers, so its cost cannot be capped. Set {second.stage}."
            "max_tokens in the config (a verdict needs a few tokens, e.g. 16)."
        )
    if total > cap:
        raise BudgetRefused(
            f"{config.name}: the run would cost ~{money(total)} at batch prices "
            f"({'; '.join(lines)}; answers at max_tokens unless earlier answers say less), over "
            f"budget.max_cost {money(cap)}. Nothing was sent. Raise the cap (budget.max_cost in "
            f"the config, or --set budget.max_cost={raised_cap(total)}), or send fewer rows "
            "(tablebatch plan shows the estimate)."
        )
    return ready


def _planned(job: JobRun, model: str, plan_for: PlanFor) -> tuple[Plan, Listing]:
    """The model's plan, and its answer stage's batches listed and read, both at once: the
    plan is Arrow work on the table, the listing Arrow and disk work on the ended batches'
    results, and both let go of the GIL, so on two cores they overlap (an incremental run
    over a million answered rows: ~1.5 s of each)."""
    run = job.stage("answer", model, job.config.fingerprint(model))
    with ThreadPoolExecutor(1, thread_name_prefix="tablebatch-listing") as pool:
        listing = pool.submit(list_stage, job.client, run)
        plan = plan_for(model)
        return plan, listing.result()


def _discover(
    job: JobRun, run: StageRun, items: Sendable, listing: Listing | None = None
) -> StageOutcome:
    """The stage's answers already on the API for ``items`` (``listing``: its batches,
    listed already)."""
    return discover(
        job.client, run, items, lambda pending: _first_names(run, pending), listing=listing
    )


def _stage(
    job: JobRun,
    run: StageRun,
    items: Sendable,
    outcome: JobOutcome,
    found: StageOutcome | None = None,
    listing: Listing | None = None,
) -> pa.Table:
    """One stage for one model: the answers already on the API (earlier runs; ``found``
    when already asked), then every attempt for the requests that have none; one result per
    request. A systemic failure ends it with what it has (``outcome.stopped`` says why)."""
    found = found or _discover(job, run, items, listing)
    retry = run.kind.retry_invalid
    pending = items.select(unanswered(items.ids, found.results, retry, found.exhausted))
    found.found = len(items) - len(pending)  # on the API already: not sent again
    outcome.add(found)
    try:
        stage = job.attempts(run, pending) if len(pending) else StageOutcome(best([]))
    except Systemic as exc:
        outcome.stopped = str(exc)
        stage = exc.outcome or StageOutcome(best([]))
    outcome.add(stage)
    outcome.spent(stage.paid, run.model)
    # one chunk, not one per batch: the output's chunks take their rows from it, and
    # taking from a hundred chunks (a take per chunk and column) cost ~1.5 s at a million
    results = best([found.results, stage.results]).combine_chunks()
    release_memory()  # the shards' results, merged
    return results


def _first_names(run: StageRun, pending: Sendable) -> set[str]:
    """The names of the batches the first attempt sends for ``pending``."""
    return {Shard(run, 1, i, rows).name for i, rows in shard_rows(pending, run.config)}


def timeout_message(
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
