"""The one retry policy of the Batch API client.

Retried: connection errors, timeouts, 408, 429 and 5xx. Every other 4xx fails
at once (retrying cannot fix it). The delay before retry ``n`` (1-based) is the
server's ``Retry-After`` (``retry-after-ms``, seconds, or an HTTP date) when it
sends one, capped at ``max_retry_after``; otherwise ``initial_delay * 2**(n-1)``
capped at ``max_delay``, less up to ``jitter`` of it at random (so that many
clients do not retry in step). A call stops after ``max_retries`` retries or
when the next wait would pass its ``deadline``.

Which failures may have taken effect matters for calls that are not safe to
repeat blindly: a refused connection, a 408, a 429 or a 503 did not reach the
application; a reset, a read timeout, a 500, 502 or 504 may have.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

import httpx

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
NOT_PROCESSED_STATUS = frozenset({408, 429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry one logical call."""

    max_retries: int = 5
    initial_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 120.0
    jitter: float = 0.25
    deadline: float | None = 600.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def retryable_status(self, status_code: int) -> bool:
        """Whether an answer with this status is worth another attempt."""
        return status_code in RETRYABLE_STATUS or status_code >= 500

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        base = min(self.initial_delay * 2 ** (retry - 1), self.max_delay)
        return base * (1 - self.jitter * self.rng.random())


def parse_retry_after(headers: httpx.Headers, now: float) -> float | None:
    """Seconds the server asks to wait, from ``retry-after-ms`` or ``retry-after``.

    ``now`` is the wall-clock time (epoch seconds), needed for an HTTP date.
    """
    millis = _number(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _number(value)
    if seconds is not None:
        return seconds
    try:
        return parsedate_to_datetime(value).timestamp() - now
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _number(value: str | None) -> float | None:
    """A finite number, or None (``nan`` and ``inf`` are not waits)."""
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None
