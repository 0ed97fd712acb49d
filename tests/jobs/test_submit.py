"""Submitting a shard against the local server: once, even when two runs race."""

from __future__ import annotations

import threading

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
