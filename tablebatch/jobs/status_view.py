"""What ``tablebatch status`` and ``tablebatch jobs`` print: a job's batches as lines of a
table, their totals, and the state of its output."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from tablebatch.api import Batch
from tablebatch.jobs.cost import Tokens, add, cost_of, money
from tablebatch.jobs.manage import (
    JobSummary,
    JobTarget,
    OutputState,
    group_jobs,
    output_state,
    tokens,
)
from tablebatch.jobs.naming import parse_batch_name
from tablebatch.jobs.prices import PriceTable, load_prices


def age_s(batch: Batch, now: datetime | None = None) -> float | None:
    """Seconds since the batch was created (None when the API does not say)."""
    if batch.created_at is None:
        return None
    created = batch.created_at
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return max(0.0, ((now or datetime.now(UTC)) - created).total_seconds())


def short_age(seconds: float | None) -> str:
    """``45s``, ``3m05s``, ``2h10m``, ``3d4h``."""
    if seconds is None:
        return "?"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def status_header(width: int = 30) -> str:
    """The header of a status table whose batch ids are ``width`` wide."""
    return (
        f"{'batch':<{width}}  {'stage':<15}  {'attempt':>7}  {'shard':>10}  {'status':<10}  "
        f"{'done':>6}  {'failed':>6}  {'cancelled':>9}  {'pending':>7}  {'age':>6}  {'tokens':>9}"
        f"  {'cost':>10}"
    )


def id_width(batches: Iterable[Batch]) -> int:
    """How wide the batch column must be for these ids (30 at least)."""
    return max([30, *(len(b.id) for b in batches)])


JOBS_HEADER = (
    f"{'job':<24}  {'state':<10}  {'batches':>7}  {'statuses':<30}  {'requests':>8}  "
    f"{'done':>8}  {'failed':>6}  {'pending':>8}  {'tokens':>10}  {'newest':>8}"
)


def in_order(batches: list[Batch]) -> list[Batch]:
    """A job's batches for reading: by stage and prompt (the newest first), then attempt
    and shard."""
    newest: dict[tuple[str, str], datetime] = {}
    keys = {}
    lowest = datetime.min.replace(tzinfo=UTC)
    for batch in batches:
        parsed = parse_batch_name(batch.name)
        group = (parsed.stage, parsed.fingerprint) if parsed else ("", batch.name)
        keys[batch.id] = (group, (parsed.attempt, str(parsed)) if parsed else (0, batch.name))
        newest[group] = max(newest.get(group, lowest), batch.created_at or lowest)
    return sorted(
        batches,
        key=lambda b: (-newest[keys[b.id][0]].timestamp(), keys[b.id][0], keys[b.id][1]),
    )


def _shard(shard: int | str, piece: int) -> int | str:
    """What a name says of its shard: the digest of what it holds (or an older name's
    position), and the piece of a batch split by bytes."""
    return f"{shard}-{piece}" if piece else shard


def batch_cost(batch: Batch, prices: PriceTable | None) -> float | None:
    """What the batch's requests cost so far at batch prices, from the tokens the API
    reports for it (None: unknown, its model has no price or the API says no tokens)."""
    if prices is None or batch.usage is None:
        return None
    usage = batch.usage
    cached = getattr(usage, "input_tokens_details", None) or {}
    tokens = Tokens(
        usage.prompt_tokens,
        usage.completion_tokens,
        int(cached.get("cached_tokens") or 0) if isinstance(cached, dict) else 0,
    )
    return cost_of(tokens, prices.get(batch.model or ""))


def batch_row(
    batch: Batch, now: datetime | None = None, prices: PriceTable | None = None
) -> dict[str, Any]:
    """A batch as one row of a status table (``prices``: its cost, at batch prices)."""
    parsed = parse_batch_name(batch.name)
    return {
        "batch": batch.id,
        "stage": f"{parsed.stage}-{parsed.fingerprint}" if parsed else batch.name,
        "attempt": parsed.attempt if parsed else None,
        "shard": _shard(parsed.shard, parsed.piece) if parsed else None,
        "status": batch.status,
        "done": batch.completed_count,
        "failed": batch.failed_count,
        "cancelled": batch.cancelled_count,
        "pending": batch.pending_count,
        "age": short_age(age_s(batch, now)),
        "tokens": tokens(batch),
        "cost": batch_cost(batch, prices),
    }


def batch_line(
    batch: Batch, now: datetime | None = None, width: int = 30, prices: PriceTable | None = None
) -> str:
    """A batch as one line under ``status_header(width)``."""
    r = batch_row(batch, now, prices)
    return (
        f"{r['batch']:<{width}}  {r['stage']:<15}  {r['attempt'] or '':>7}  "
        f"{'' if r['shard'] is None else r['shard']:>10}  {r['status']:<10}  "
        f"{r['done']:>6}  {r['failed']:>6}  {r['cancelled']:>9}  {r['pending']:>7}  "
        f"{r['age']:>6}  {r['tokens']:>9,}  {money(r['cost']):>10}"
    )


def status_lines(
    target: JobTarget,
    api: str,
    batches: list[Batch],
    output: OutputState | None = None,
    now: datetime | None = None,
) -> list[str]:
    """What ``tablebatch status`` prints: the job's batches, their totals, its output
    (``output``, read from the job's output path when not given)."""
    now = now or datetime.now(UTC)
    summary = JobSummary(target.name, batches)
    lines = [f"{target.name} on {api}: {len(batches)} batch(es), {summary.state}"]
    if batches:
        prices = load_prices(target.root, target.config)
        width = id_width(batches)
        lines.append("  " + status_header(width))
        lines += ["  " + batch_line(batch, now, width, prices) for batch in in_order(batches)]
        total: float | None = 0.0
        for batch in batches:
            total = add(total, batch_cost(batch, prices))
        lines.append(
            f"  total: {summary.total('request')} requests: {summary.total('completed')} done, "
            f"{summary.total('failed')} failed, {summary.total('cancelled')} cancelled, "
            f"{summary.total('pending')} pending; {summary.tokens:,} tokens, "
            f"{money(total, prices.currency)} at batch prices"
        )
    path = target.output_path
    if path is None:
        lines.append(f"  output: unknown (no config named {target.name} in {target.root}/configs)")
        return lines
    state = output or output_state(path)
    if state.written_at is None:
        lines.append(f"  output {path}: not written yet")
        return lines
    missing = ", ".join(
        f"{n} {s}" for s, n in sorted(state.rows_by_status.items()) if s != "completed"
    )
    when = short_age((now - state.written_at).total_seconds())
    lines.append(
        f"  output {path}: {state.rows} rows, {state.answered} answered, {state.missing} "
        f"missing{f' ({missing})' if missing else ''}; written {when} ago"
    )
    return lines


def jobs_lines(
    api: str, batches: list[Batch], status: str | None = None, now: datetime | None = None
) -> list[str]:
    """What ``tablebatch jobs`` prints: every job on the API, newest first."""
    now = now or datetime.now(UTC)
    jobs, foreign = group_jobs(batches)
    which = f" with batches {status}" if status else ""
    lines = [f"jobs on {api}{which}: {len(jobs)} job(s), {len(batches)} batch(es)"]
    if jobs:
        lines.append("  " + JOBS_HEADER)
    for job in jobs:
        newest = job.newest
        age = short_age((now - newest).total_seconds()) if newest else "?"
        lines.append(
            f"  {job.job:<24}  {job.state:<10}  {len(job.batches):>7}  {job.statuses:<30}  "
            f"{job.total('request'):>8}  {job.total('completed'):>8}  {job.total('failed'):>6}  "
            f"{job.total('pending'):>8}  {job.tokens:>10,}  {age + ' ago':>8}"
        )
    if foreign:
        lines.append(f"  ({foreign} batch(es) not named by tablebatch)")
    return lines
