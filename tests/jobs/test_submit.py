"""Submitting a shard against the local server: once, even when two runs race."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from tablebatch.api import BatchClient
from tablebatch.jobs.submit import submit_shard
from tests.helpers import make_requests


def _items(n: int) -> list[tuple[str, bytes]]:
    import orjson

    return [(r["custom_id"], orjson.dumps(r)) for r in make_requests(n)]


def test_a_second_submit_sends_nothing(server) -> None:
    with BatchClient(server.url) as client:
        first, sent = submit_shard(client, "job--answer-x--a1--s0000", "m", _items(20), "{}")
        assert sent == 20 and first.status == "processing"
        again, sent = submit_shard(client, "job--answer-x--a1--s0000", "m", _items(20), "{}")
        assert sent == 0 and again.id == first.id


def test_two_runs_racing_for_a_shard_share_one_batch(server) -> None:
    both_listed = threading.Barrier(2)

    class Racing(BatchClient):
        def create_batch(self, *args, **kwargs):  # both runs found nothing, then both create
            both_listed.wait(10)
            return super().create_batch(*args, **kwargs)

    outcomes: list[tuple[str, int]] = []

    def run() -> None:
        with Racing(server.url) as client:
            batch, sent = submit_shard(client, "race--answer-x--a1--s0000", "m", _items(50), "{}")
            outcomes.append((batch.id, sent))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(outcomes) == 2
    assert outcomes[0][0] == outcomes[1][0]  # one batch for both
    assert sum(sent for _, sent in outcomes) == 50  # each request sent once
    with BatchClient(server.url) as client:
        batches = list(client.iter_batches(name="race--answer-x--a1--s0000"))
        assert len(batches) == 2
        kept, loser = batches[-1], batches[0]
        assert kept.id == outcomes[0][0] and kept.request_count == 50
        assert client.wait_for_batch(loser.id, poll_interval=0.01).status == "cancelled"
        assert loser.request_count == 0


def _config(**batch: object):
    from tablebatch.jobs.config import parse_config

    data = {
        "name": "calls",
        "kind": "classification",
        "input": {"path": "x.csv", "id_column": "id"},
        "prompt": {"template": "{text}"},
        "model": "m",
        "labels": ["positive", "negative"],
        "batch": {"poll_interval_s": 0.01, "max_poll_interval_s": 0.05, **batch},
    }
    return parse_config(data, "calls.yaml")


def _rows(config, n: int):
    import pyarrow as pa

    from tablebatch.jobs.plan import plan_requests

    table = pa.table({"id": [f"r{i}" for i in range(n)], "text": [f"good {i}" for i in range(n)]})
    return plan_requests(table, config, table["id"].combine_chunks(), "m").rows


def test_a_shard_costs_the_fewest_calls_and_a_rerun_sends_nothing(server) -> None:
    """A fresh shard: one listing for the attempt, create, one check for a racing run,
    the adds, start, polls, one page of results. A re-run: the listing, the polls it needs
    (none: the batch has ended) and the results."""
    from tablebatch.jobs.naming import batch_prefix, content_digest
    from tablebatch.jobs.submit import Shard, StageRun, existing_batches, send_shard

    calls: list[str] = []
    config = _config(max_requests=2500)
    rows = _rows(config, 2500)

    def count(request) -> None:
        calls.append(f"{request.method} {request.url.path}")

    with BatchClient(server.url, max_requests_per_call=1000) as client:
        client._http.event_hooks["request"].append(count)
        prefix = batch_prefix(config, "answer", "fp", 1)
        existing = existing_batches(client, prefix)
        shard = Shard(StageRun(config, "answer", "m", "fp"), 1, 0, rows, existing)
        assert shard.name == prefix + content_digest(rows.ids.to_pylist())
        outcome = send_shard(client, shard)
        assert outcome.sent == 2500 and outcome.results.num_rows == 2500
        posts = [c for c in calls if c.startswith("POST")]
        gets = [c for c in calls if c.startswith("GET")]
        assert len(posts) == 1 + 3 + 1  # create, 3 adds of 1000, start
        assert gets[:2] == ["GET /v1/batches", "GET /v1/batches"]  # listing, race check
        assert sum(c.endswith("/results") for c in gets) == 1  # one page of 2,500 results
        calls.clear()
        existing = existing_batches(client, prefix)
        again = send_shard(client, Shard(shard.run, 1, 0, rows, existing))
        assert again.sent == 0 and again.results.num_rows == 2500
        assert [c.split("/")[-1] for c in calls] == ["batches", "results"]


def _started(client: BatchClient, name: str, n: int = 30):
    from tablebatch.jobs.submit import submit_shard

    return submit_shard(client, name, "m", _items(n), "{}")[0]


def test_one_listing_a_round_watches_every_batch_of_an_attempt(server_factory) -> None:
    from tablebatch.jobs.watch import BatchWatcher

    server = server_factory(faults={"processing_rate": 400})  # 6 batches: ~0.5 s of work
    config = _config(poll_interval_s=0.05, max_poll_interval_s=0.05)
    with BatchClient(server.url) as client:
        batches = [_started(client, f"w--a1--s{i:04d}") for i in range(6)]
        _started(client, "someone-else--a1--s0000")
        watcher = BatchWatcher(client, "w--a1--", config)
        seen: dict[str, list[str]] = {b.id: [] for b in batches}
        ended: list = []

        def wait(batch) -> None:
            ended.append(watcher.wait(batch, lambda b: seen[b.id].append(b.status)))

        threads = [threading.Thread(target=wait, args=(b,)) for b in batches]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(b.id for b in ended) == sorted(b.id for b in batches)
        assert all(b.status == "completed" and b.completed_count == 30 for b in ended)
        assert all(statuses[-1] == "completed" for statuses in seen.values())
        # a round covers all six: far fewer calls than a poll per batch per round
        assert watcher.polls < 6 * 3


def test_a_server_that_ignores_the_prefix_is_polled_batch_by_batch(server) -> None:
    from tablebatch.jobs.watch import BatchWatcher

    class NoPrefix(BatchClient):
        def list_batches(self, **params):
            params.pop("name_prefix", None)
            return super().list_batches(**params)

    config = _config()
    with NoPrefix(server.url) as client:
        _started(client, "other--a1--s0000")
        batch = _started(client, "np--a1--s0000")
        watcher = BatchWatcher(client, "np--a1--", config)
        assert watcher.wait(batch).status == "completed"
        assert not watcher._shared and watcher.polls == 1


def test_the_watcher_gives_up_after_max_wait(server_factory) -> None:
    from tablebatch.api import WaitTimeoutError
    from tablebatch.jobs.watch import BatchWatcher

    server = server_factory(faults={"processing_delay_s": 30})
    config = _config(max_wait_s=0.3)
    with BatchClient(server.url) as client:
        batch = _started(client, "slow--a1--s0000")
        with pytest.raises(WaitTimeoutError) as caught:
            BatchWatcher(client, "slow--a1--", config).wait(batch)
        assert caught.value.batch.id == batch.id and caught.value.waited_s >= 0.3


def test_the_watcher_polls_when_a_batch_should_end_not_after_the_backoff() -> None:
    from tablebatch.api import Batch
    from tablebatch.jobs.watch import BatchWatcher

    # a server that ends 1,000 requests a second from 1 s on, batch after batch: the first
    # of two 10,000-request batches ends at 11 s, the second at 21 s; the backoff alone
    # (sleeps of 1 s, 1.5, 2.25, ... up to 60 s) looks at 8.1 s, 18.6 s, then 30 s
    now = [0.0]
    looks: list[float] = []  # when the watcher listed

    def at(t: float, n: int) -> Batch:
        done = min(10_000, max(0, int(1000 * (t - 1.0)) - 10_000 * n))
        status = "completed" if done == 10_000 else "processing"
        return Batch(
            id=f"b{n}",
            name=f"w--a1--s{n}",
            status=status,
            request_count=10_000,
            completed_count=done,
        )

    class Listing:
        lists_by_prefix = True

        def iter_batches(self, **params):
            looks.append(now[0])
            return iter([at(now[0], 0), at(now[0], 1)])

    def sleep(seconds: float) -> None:
        deadline = time.monotonic() + 10
        while len(watcher._waiting) < 2 and not ended and time.monotonic() < deadline:
            time.sleep(0.001)  # both wait from the start: the fake clock runs only then
        now[0] += seconds

    config = _config(poll_interval_s=1.0, max_poll_interval_s=60.0)
    watcher = BatchWatcher(Listing(), "w--a1--", config, clock=lambda: now[0], sleep=sleep)
    ended: list[Batch] = []
    threads = [
        threading.Thread(target=lambda b=b: ended.append(watcher.wait(b)))
        for b in (at(0.0, 0), at(0.0, 1))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(b.status for b in ended) == ["completed", "completed"]
    assert next(t for t in looks if t >= 11.0) == pytest.approx(
        11.0, abs=0.01
    )  # as the first ended
    assert next(t for t in looks if t >= 21.0) == pytest.approx(21.0, abs=0.01)  # as the second did
    assert looks[:3] == [0.0, 1.0, 2.5]  # no pace seen yet: the backoff
    gaps = [b - a for a, b in itertools.pairwise(looks)]
    assert all(g >= 1.0 - 1e-9 for g in gaps)  # never sooner than poll_interval_s
