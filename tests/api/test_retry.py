"""The retry policy, through the client, with httpx.MockTransport and an injected sleep."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest

from tablebatch.api import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BatchApiError,
    BatchCancelledError,
    BatchClient,
    BatchFailedError,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    UnprocessableEntityError,
)

NOW = 1_800_000_000.0
BATCH = {"id": "batch_1", "object": "batch", "name": "n", "status": "created"}


def _error(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"error": {"type": "x_error", "message": f"server says {status}"}}
    return httpx.Response(status, json=body, headers=headers)


class Script:
    """A transport that answers from a script: responses or exceptions, in turn."""

    def __init__(self, *steps: httpx.Response | Exception | Callable) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, Exception):
            raise step
        return step


def _client(script: Script, sleeps: list[float], **policy: float) -> BatchClient:
    retry = RetryPolicy(
        max_retries=int(policy.pop("max_retries", 3)),
        initial_delay=0.5,
        max_delay=4.0,
        max_retry_after=60.0,
        jitter=0.0,
        deadline=policy.pop("deadline", None),
        rng=random.Random(0),
    )
    return BatchClient(
        "http://api.test/v1",
        "sk-secret-123",
        transport=httpx.MockTransport(script),
        retry=retry,
        sleep=sleeps.append,
        clock=lambda: sum(sleeps),
        wall_clock=lambda: NOW,
    )


OK = httpx.Response(200, json=BATCH)
HTTP_DATE = format_datetime(datetime.fromtimestamp(NOW + 7, UTC), usegmt=True)


@pytest.mark.parametrize(
    ("name", "steps", "attempts", "expected_sleeps"),
    [
        ("429 with Retry-After seconds", [_error(429, {"Retry-After": "3"}), OK], 2, [3.0]),
        ("429 with Retry-After ms", [_error(429, {"retry-after-ms": "250"}), OK], 2, [0.25]),
        ("429 with an HTTP date", [_error(429, {"Retry-After": HTTP_DATE}), OK], 2, [7.0]),
        ("429 over the cap", [_error(429, {"Retry-After": "3600"}), OK], 2, [60.0]),
        ("429 without Retry-After", [_error(429), _error(429), OK], 3, [0.5, 1.0]),
        ("503 then 500", [_error(503), _error(500), OK], 3, [0.5, 1.0]),
        ("502 and 504", [_error(502), _error(504), OK], 3, [0.5, 1.0]),
        ("408", [_error(408), OK], 2, [0.5]),
        ("connection reset", [httpx.ReadError("reset"), OK], 2, [0.5]),
        ("connection refused", [httpx.ConnectError("refused"), OK], 2, [0.5]),
        ("read timeout", [httpx.ReadTimeout("slow"), OK], 2, [0.5]),
        ("dropped mid-answer", [httpx.RemoteProtocolError("peer closed"), OK], 2, [0.5]),
    ],
)
def test_retried_cases(name, steps, attempts, expected_sleeps) -> None:
    script, sleeps = Script(*steps), []
    with _client(script, sleeps) as client:
        batch = client.get_batch("batch_1")
    assert batch.id == "batch_1"
    assert len(script.requests) == attempts, name
    assert sleeps == pytest.approx(expected_sleeps), name


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (404, NotFoundError),
        (409, ConflictError),
        (413, PayloadTooLargeError),
        (422, UnprocessableEntityError),
    ],
)
def test_other_4xx_fail_at_once(status: int, cls: type) -> None:
    script, sleeps = Script(_error(status), OK), []
    with _client(script, sleeps) as client, pytest.raises(cls) as info:
        client.get_batch("batch_1")
    assert len(script.requests) == 1 and sleeps == []
    error = info.value
    assert error.status_code == status
    assert error.error_type == "x_error"
    assert error.server_message == f"server says {status}"
    assert f"GET /v1/batches/batch_1 answered {status}" in str(error)


def test_backoff_is_capped_and_attempts_are_bounded() -> None:
    script, sleeps = Script(_error(500)), []
    with _client(script, sleeps, max_retries=6) as client, pytest.raises(ServerError) as info:
        client.get_batch("batch_1")
    assert len(script.requests) == 7
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert info.value.attempts == 7 and "after 7 attempts" in str(info.value)


def test_rate_limit_exhausted_raises_rate_limit_error() -> None:
    script, sleeps = Script(_error(429, {"Retry-After": "1"})), []
    with _client(script, sleeps, max_retries=2) as client, pytest.raises(RateLimitError):
        client.list_batches()
    assert sleeps == [1.0, 1.0]


def test_deadline_stops_retrying_early() -> None:
    script, sleeps = Script(_error(503)), []
    client = _client(script, sleeps, max_retries=10, deadline=3.0)
    with client, pytest.raises(ServerError):
        client.get_batch("batch_1")
    assert sleeps == [0.5, 1.0]  # the next wait (2.0) would pass the 3 s deadline
    assert len(script.requests) == 3


def test_connection_errors_are_translated() -> None:
    for exc, cls in [
        (httpx.ConnectError("no"), APIConnectionError),
        (httpx.ReadTimeout("t"), APITimeoutError),
    ]:
        script, sleeps = Script(exc), []
        with _client(script, sleeps, max_retries=1) as client, pytest.raises(cls) as info:
            client.get_batch("b")
        assert isinstance(info.value.__cause__, type(exc))
        assert "api.test" in str(info.value)


def test_jitter_shortens_the_wait_within_its_share() -> None:
    policy = RetryPolicy(initial_delay=1.0, max_delay=100, jitter=0.25, rng=random.Random(1))
    delays = [policy.delay(3) for _ in range(200)]
    assert all(3.0 <= d <= 4.0 for d in delays)
    assert len(set(delays)) > 100


def test_every_post_carries_one_idempotency_key_reused_by_its_retries() -> None:
    script, sleeps = Script(_error(503), _error(429), OK, OK), []
    with _client(script, sleeps) as client:
        client.create_batch("a")
        client.create_batch("b")
    keys = [r.headers.get("Idempotency-Key") for r in script.requests]
    assert keys[0] and keys[0] == keys[1] == keys[2]
    assert keys[3] and keys[3] != keys[0]


def test_a_create_whose_answer_was_lost_is_retried_with_its_key() -> None:
    script, sleeps = Script(httpx.ReadError("reset"), OK), []
    with _client(script, sleeps) as client:
        assert client.create_batch("a").id == "batch_1"
    assert len(script.requests) == 2
    assert (
        script.requests[0].headers["Idempotency-Key"]
        == script.requests[1].headers["Idempotency-Key"]
    )


def test_the_key_never_shows(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    script, sleeps = Script(_error(503), _error(401)), []
    client = _client(script, sleeps)
    client.key_source = "$XAI_API_KEY"
    with client, pytest.raises(AuthenticationError) as info:
        client.get_batch("batch_1")
    assert script.requests[0].headers["Authorization"] == "Bearer sk-secret-123"
    assert "$XAI_API_KEY" in str(info.value)
    for text in (str(info.value), repr(info.value), repr(client), caplog.text):
        assert "sk-secret-123" not in text
    assert caplog.text  # the retry was logged, without the key


def test_a_retry_after_that_is_not_a_number_falls_back_to_backoff() -> None:
    for headers in ({"Retry-After": "nan"}, {"retry-after-ms": "inf"}, {"Retry-After": "soon"}):
        script, sleeps = Script(_error(429, headers), OK), []
        with _client(script, sleeps) as client:
            client.get_batch("batch_1")
        assert sleeps == [0.5], headers


@pytest.mark.parametrize("key", ["sk-\x00abc", "sk-ünïcode", "sk one"])
def test_a_malformed_key_is_refused_without_showing_it(key: str) -> None:
    with pytest.raises(BatchApiError) as info:
        BatchClient("http://api.test/v1", key, key_source="$XAI_API_KEY")
    assert "$XAI_API_KEY" in str(info.value) and key not in str(info.value)


def test_a_key_with_a_trailing_newline_is_trimmed() -> None:
    script, sleeps = Script(OK), []
    client = BatchClient(
        "http://api.test/v1", "sk-abc\n", transport=httpx.MockTransport(script), sleep=sleeps.append
    )
    with client:
        client.get_batch("batch_1")
    assert script.requests[0].headers["Authorization"] == "Bearer sk-abc"


def test_raise_on_failure() -> None:
    for status, cls in (("failed", BatchFailedError), ("cancelled", BatchCancelledError)):
        failed = httpx.Response(200, json={**BATCH, "status": status, "request_count": 4})
        script, sleeps = Script(failed), []
        with _client(script, sleeps) as client:
            assert client.wait_for_batch("batch_1").status == status
            with pytest.raises(cls, match="batch_1"):
                client.wait_for_batch("batch_1", raise_on_failure=True)
