"""What requests cost: tokens times a model's prices, before a run (an estimate) and after
(what the API reported), at batch and at real-time prices; and the meter that keeps a run
under ``budget.max_cost``.

A cost whose model has no price is ``None`` ("unknown"), never 0. Prompt tokens include
the cached ones: ``cached`` of them were read from the provider's prompt cache and
``cache_write`` written to it (Anthropic), each at its own price.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tablebatch.jobs.build import Sendable
from tablebatch.jobs.prices import Price, PriceTable
from tablebatch.jobs.schema import JobConfig
from tablebatch.jobs.tokens import Counter, request_tokens

MILLION = 1_000_000
TOKEN_COLUMNS = {  # result/output column -> Tokens field
    "prompt_tokens": "prompt",
    "completion_tokens": "completion",
    "cached_tokens": "cached",
    "cache_write_tokens": "cache_write",
}


@dataclass
class Tokens:
    """Token counts of some requests."""

    prompt: int = 0
    completion: int = 0
    cached: int = 0  # of prompt: read from the prompt cache
    cache_write: int = 0  # of prompt: written to the prompt cache

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(
            self.prompt + other.prompt,
            self.completion + other.completion,
            self.cached + other.cached,
            self.cache_write + other.cache_write,
        )

    @classmethod
    def of(cls, table: pa.Table) -> Tokens:
        """The sums of a results (or output) table's token columns (absent ones: 0)."""
        sums = {
            name: int(pc.sum(table[column]).as_py() or 0)
            for column, name in TOKEN_COLUMNS.items()
            if column in table.column_names
        }
        return cls(**sums)

    def scaled(self, share: float) -> Tokens:
        """A share of these tokens (1: all), e.g. of a batch whose requests were partly
        sent by an earlier run."""
        if share >= 1:
            return self
        return Tokens(*(round(v * share) for v in self.as_dict().values()))

    def as_dict(self) -> dict[str, int]:
        """For the report."""
        return {
            "prompt": self.prompt,
            "completion": self.completion,
            "cached": self.cached,
            "cache_write": self.cache_write,
        }


def cost_of(tokens: Tokens, price: Price | None, *, batch: bool = True) -> float | None:
    """What ``tokens`` cost at ``price`` (None: unknown), at batch or real-time prices."""
    if price is None:
        return None
    plain = max(tokens.prompt - tokens.cached - tokens.cache_write, 0)
    total = (
        plain * price.input
        + tokens.cached * price.cached_input
        + tokens.cache_write * price.cache_write
        + tokens.completion * price.output
    ) / MILLION
    return total * (1 - price.batch_discount) if batch else total


def add(a: float | None, b: float | None) -> float | None:
    """A sum of costs, unknown when either is."""
    return None if a is None or b is None else a + b


def money(value: float | None, currency: str = "USD") -> str:
    """A cost for people: ``$0.0123``, or ``unknown``."""
    if value is None:
        return "unknown"
    sign = "$" if currency == "USD" else f"{currency} "
    if value == 0 or abs(value) >= 1:
        return f"{sign}{value:,.2f}"
    return f"{sign}{value:.4f}" if abs(value) >= 0.01 else f"{sign}{value:.6f}"


def raised_cap(total: float) -> str:
    """A cap a fifth over ``total``, written for ``--set budget.max_cost=``."""
    value = total * 1.2
    return f"{value:.2f}" if value >= 1 else f"{value:.2g}"


def max_completion(config: JobConfig) -> int | None:
    """The most completion tokens one request may take (its ``max_tokens``; Anthropic's
    default when the config gives none), None when nothing bounds it."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = config.params.get(key)
        if isinstance(value, int) and value > 0:
            return value
    api = config.api
    if api is not None and api.provider == "anthropic":
        from tablebatch.api.dialects.anthropic import DEFAULT_MAX_TOKENS

        return api.max_tokens or DEFAULT_MAX_TOKENS
    return None


def mean_completion(results: pa.Table) -> float | None:
    """The mean completion tokens of the answered results (None when there are none)."""
    if not results.num_rows or "completion_tokens" not in results.column_names:
        return None
    done = results.filter(pc.equal(results["status"], "completed"))
    if not done.num_rows:
        return None
    return float(pc.mean(done["completion_tokens"]).as_py())


@dataclass
class Estimate:
    """What sending some requests to one model would cost: prompt tokens as counted
    (``counter`` says how), completion tokens at most (``max_tokens``) and likely (the mean
    of earlier answers, when there are any)."""

    model: str
    requests: int
    prompt_tokens: int
    counter: str
    price: Price | None
    max_completion: int | None  # per request
    mean_completion: float | None = None  # per request, from earlier answers

    @property
    def completion_tokens(self) -> int | None:
        """The expected completion tokens: the earlier answers' mean, else the upper bound."""
        each = self.mean_completion if self.mean_completion is not None else self.max_completion
        return None if each is None else round(each * self.requests)

    @property
    def worst_completion_tokens(self) -> int | None:
        """The completion tokens if every answer took ``max_tokens``."""
        return None if self.max_completion is None else self.max_completion * self.requests

    def cost(self, *, batch: bool = True, worst: bool = False) -> float | None:
        """The expected (or ``worst``) cost, at batch or real-time prices."""
        completion = self.worst_completion_tokens if worst else self.completion_tokens
        if completion is None:
            return None
        return cost_of(Tokens(self.prompt_tokens, completion), self.price, batch=batch)


@dataclass
class Meter:
    """A run's spending against ``budget.max_cost``: what its ended shards cost (the API's
    token counts at batch prices) and the worst case of the shards in flight. A shard is
    sent only if spent + in flight + its worst case stays within the cap. Shared by every
    stage and attempt of the run (thread-safe: shards end on other threads)."""

    max_cost: float
    spent: float = 0.0
    in_flight: dict[Any, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def reserve(self, key: Any, worst: float) -> bool:
        """Reserve ``worst`` for a shard about to be sent; False (nothing reserved) when it
        would pass the cap."""
        with self._lock:
            if self.spent + sum(self.in_flight.values()) + worst > self.max_cost + 1e-12:
                return False
            self.in_flight[key] = worst
            return True

    def settle(self, key: Any, actual: float) -> None:
        """A shard ended: its reservation becomes what it cost."""
        with self._lock:
            self.in_flight.pop(key, None)
            self.spent += actual

    def message(self, worst: float, left: int, currency: str = "USD") -> str:
        """Why the run stopped sending, and how to go on."""
        return (
            f"budget.max_cost {money(self.max_cost, currency)} reached: this run spent "
            f"{money(self.spent, currency)}, and the next shard could cost up to "
            f"{money(worst, currency)} (its requests at max_tokens), so {left} request(s) were "
            "not sent. Answered rows are kept; to send the rest, raise the cap (--set "
            "budget.max_cost=...) and run the job again: only the rest is sent."
        )


ESTIMATE_CHUNK = 5000  # requests rendered at a time to count their tokens


def prompt_tokens(rows: Sendable, counter: Counter) -> int:
    """The prompt tokens of ``rows``' requests, rendered a chunk at a time and counted."""
    total = 0
    for start in range(0, len(rows), ESTIMATE_CHUNK):
        rendered, _ = rows.slice(start, ESTIMATE_CHUNK).render()
        total += sum(request_tokens(counter, rendered))
    return total


def estimate(
    config: JobConfig,
    model: str,
    rows: Sendable,
    prices: PriceTable,
    counter: Counter,
    earlier: pa.Table | None = None,
) -> Estimate:
    """What sending ``rows`` to ``model`` would cost; ``earlier``: results of the job's
    earlier answers, whose mean completion is the likely figure."""
    return Estimate(
        model,
        len(rows),
        prompt_tokens(rows, counter),
        counter.name,
        prices.get(model),
        max_completion(config),
        mean_completion(earlier) if earlier is not None else None,
    )


@dataclass
class ShardCosts:
    """How a stage's shards are priced for the run's ``Meter``: a shard's worst case before
    it is sent (its prompt tokens counted, every answer at ``max_tokens``), and what it
    cost once ended (the API's token counts)."""

    meter: Meter
    price: Price
    counter: Counter
    max_completion: int
    currency: str = "USD"

    def worst(self, rows: Sendable) -> float:
        """The most that sending ``rows`` may cost, at batch prices."""
        tokens = Tokens(prompt_tokens(rows, self.counter), self.max_completion * len(rows))
        return cost_of(tokens, self.price) or 0.0

    def actual(self, paid: Tokens) -> float:
        """What an ended shard's requests sent now cost, at batch prices."""
        return cost_of(paid, self.price) or 0.0
