"""BatchClient against the real local server (port 0): every method, and a run under faults."""

from __future__ import annotations

import random
from collections import Counter

import httpx
import pytest

from tablebatch.api import (
    AuthenticationError,
    Batch,
    BatchApiError,
    BatchClient,
    ConflictError,
    NotFoundError,
    RetryPolicy,
)
from tests.helpers import make_requests


class KeylessTransport(httpx.HTTPTransport):
    """Drops the Idempotency-Key of adds, as a server that ignores it would, and records
    their statuses."""

    def __init__(self) -> None:
        super().__init__()
        self.add_statuses: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        adding = request.method == "POST" and request.url.path.endswith("/requests")
        if adding:
            request.headers.pop("Idempotency-Key", None)
        response = super().handle_request(request)
        if adding:
            self.add_statuses.append(response.status_code)
        return response


def test_every_method(server) -> None:
    with BatchClient(server.url) as client:
        batch = client.create_batch("contract", model="grok-4", description="d")
        assert isinstance(batch, Batch) and batch.status == "created"
        assert client.get_batch(batch.id) == batch
        assert client.find_batch("contract").id == batch.id
        assert client.find_batch("nothing") is None
        assert [b.id for b in client.list_batches(status="created").data] == [batch.id]

        added = client.add_requests(batch.id, make_requests(30))
        assert (added.added, added.already_present, added.calls) == (30, 0, 1)
        again = client.add_requests(batch.id, make_requests(35))
        assert (again.added, again.already_present) == (5, 30)
        assert [r.custom_id for r in client.iter_requests(batch.id, page_size=4)] == [
            f"r-{i}" for i in range(35)
        ]
        page = client.list_requests(batch.id, limit=10, status="pending")
        assert len(page.data) == 10 and page.has_more

        started = client.start(batch.id)
        assert started.status == "processing"
        assert client.start(batch.id).status in ("processing", "completed")  # harmless repeat
        done = client.wait_for_batch(batch.id, poll_interval=0.01)
        assert done.is_terminal and done.status == "completed" and done.pending_count == 0
        results = list(client.iter_results(batch.id, page_size=8))
        assert sorted(r.custom_id for r in results) == sorted(f"r-{i}" for i in range(35))
        assert all(r.response.choices[0].message.content == "positive" for r in results)
        assert len(client.list_results(batch.id, limit=5).data) == 5

        with pytest.raises(ConflictError, match="already completed"):
            client.cancel(batch.id)
        other = client.create_batch("to-cancel")
        client.add_requests(other.id, make_requests(3))
        assert client.cancel(other.id).status in ("cancelling", "cancelled")
        assert client.cancel(other.id).status in ("cancelling", "cancelled")  # harmless repeat
        assert client.wait_for_batch(other.id, poll_interval=0.01).status == "cancelled"
        with pytest.raises(NotFoundError):
            client.get_batch("batch_missing")
        with pytest.raises(ConflictError, match=r"processing|completed"):
            client.add_requests(batch.id, make_requests(1, "late"))


def test_a_wrong_key_says_where_the_key_comes_from(server_factory) -> None:
    server = server_factory(api_keys=["right"])
    client = BatchClient(server.url, "wrong", key_source="$XAI_API_KEY")
    with client, pytest.raises(AuthenticationError) as info:
        client.list_batches()
    assert "$XAI_API_KEY" in str(info.value) and "wrong" not in str(info.value)
    with BatchClient(server.url, "right") as client:
        assert client.list_batches().data == []


def test_from_env_reads_the_key(server_factory, monkeypatch: pytest.MonkeyPatch) -> None:
    server = server_factory(api_keys=["from-env"])
    monkeypatch.delenv("TB_TEST_KEY", raising=False)
    with pytest.raises(BatchApiError, match="set the environment variable TB_TEST_KEY"):
        BatchClient.from_env(server.url, "TB_TEST_KEY")
    monkeypatch.setenv("TB_TEST_KEY", "from-env")
    with BatchClient.from_env(server.url, "TB_TEST_KEY") as client:
        assert client.list_batches().data == []
    monkeypatch.setenv("TB_TEST_KEY", "stale")
    client = BatchClient.from_env(server.url, "TB_TEST_KEY")
    with client, pytest.raises(AuthenticationError, match=r"\$TB_TEST_KEY"):
        client.list_batches()


def test_2000_requests_under_faults_nothing_lost_nothing_twice(server_factory) -> None:
    server = server_factory(
        faults={
            "seed": 11,
            "rate_limit_rate": 0.1,
            "retry_after_s": 0,
            "server_error_rate": 0.05,
            "unavailable_rate": 0.05,
            "post_commit_error_rate": 0.1,
            "latency_s": 0.002,
        }
    )
    policy = RetryPolicy(max_retries=12, initial_delay=0.005, max_delay=0.05, rng=random.Random(2))
    transport = KeylessTransport()
    with BatchClient(
        server.url, retry=policy, max_requests_per_call=100, transport=transport
    ) as client:
        batch = client.create_batch("under-faults")
        added = client.add_requests(batch.id, make_requests(2000))
        assert added.added + added.already_present == 2000
        client.start(batch.id)
        done = client.wait_for_batch(batch.id, poll_interval=0.01, max_poll_interval=0.05)
        results = list(client.iter_results(batch.id, page_size=150))
        assert len(list(client.iter_batches(name="under-faults"))) == 1
    assert added.already_present > 0, "no add took effect unseen: the faults were not exercised"
    # the server could not replay (no keys reached it): a resent custom_id would be a 409
    assert transport.add_statuses and 409 not in transport.add_statuses
    store = server.app.state.store
    counted = store.get_batch(batch.id)
    assert (counted.request_count, counted.completed_count) == (2000, 2000)
    assert done.status == "completed"
    held = Counter(r["custom_id"] for r in store.list_requests(batch.id, 10_000, None, None)[0])
    assert held == Counter(f"r-{i}" for i in range(2000))
    assert Counter(r.custom_id for r in results) == Counter(f"r-{i}" for i in range(2000))
