"""``RunGuard`` on its own, against a real local server whose batches stay in flight (a
processing delay): what a stopped, crashed or timed-out run does with its batches, and
only with its own."""

from __future__ import annotations

import os
import signal

import pytest

from tablebatch.api import BatchClient, WaitTimeoutError
from tablebatch.jobs.config import parse_config
from tablebatch.jobs.errors import JobAborted
from tablebatch.jobs.guard import RunGuard, run_prefixes, stopping
from tablebatch.jobs.naming import batch_name
from tablebatch.jobs.submit import submit_shard
from tests.helpers import make_requests


def _config(**batch: object):
    return parse_config(
        {
            "name": "guarded",
            "kind": "classification",
            "input": {"path": "x.csv", "id_column": "id"},
            "prompt": {"template": "{text}"},
            "model": "m",
            "labels": ["yes", "no"],
            "batch": batch,
        },
        "guarded.yaml",
    )


def _in_flight(client: BatchClient, config, shards: int = 2):
    """``shards`` started batches of the run, and one of another job."""
    import orjson

    def items(prefix: str) -> list[tuple[str, bytes]]:
        return [(r["custom_id"], orjson.dumps(r)) for r in make_requests(5, prefix)]

    ours = [
        submit_shard(
            client,
            batch_name(config, "answer", config.fingerprint("m"), 1, i),
            "m",
            items(f"s{i}"),
            "{}",
        )[0]
        for i in range(shards)
    ]
    other = submit_shard(client, "someone-else--answer-0000aaaa--a1--s0000", "m", items("o"), "{}")[
        0
    ]
    return ours, other


@pytest.fixture
def slow(server_factory):
    return server_factory(faults={"processing_delay_s": 60})


def _statuses(client: BatchClient, batches) -> list[str]:
    return [client.get_batch(b.id).status for b in batches]


def test_an_abort_cancels_the_runs_batches_and_only_those(slow) -> None:
    config = _config()
    guard = RunGuard(config, sweep_s=0.05)
    with BatchClient(slow.url) as client:
        ours, other = _in_flight(client, config)
        assert all(p.startswith("guarded--answer-") for p in run_prefixes(config))
        with guard.protect(client):
            assert not stopping()
            guard.abort("a test stops it")
            assert stopping() and guard.aborted
            guard.sleep(5)  # wakes at once: the waits see their batches end
            client.wait_for_batch(ours[0].id, poll_interval=0.02, max_wait=10)
        assert not stopping()  # outside the guarded block
        assert set(_statuses(client, ours)) <= {"cancelling", "cancelled"}
        assert _statuses(client, [other]) == ["processing"]
    assert {b for b in guard.cancelled} == {b.id for b in ours}
    assert "2 batch(es) in flight were cancelled" in guard.message()


def test_on_abort_keep_leaves_the_batches_running_and_stops_the_waits(slow) -> None:
    config = _config(on_abort="keep")
    guard = RunGuard(config)
    with BatchClient(slow.url) as client:
        ours, _ = _in_flight(client, config)
        with pytest.raises(JobAborted), guard.protect(client):
            guard.abort("a test stops it")
            guard.sleep(5)
        assert _statuses(client, ours) == ["processing", "processing"]
    assert "on_abort: keep" in guard.message()


def test_a_crash_cancels_the_batches_in_flight_and_keeps_its_own_error(slow) -> None:
    config = _config()
    guard = RunGuard(config, sweep_s=0.05)
    with BatchClient(slow.url) as client:
        ours, other = _in_flight(client, config)
        with pytest.raises(RuntimeError, match="disk on fire"), guard.protect(client):
            raise RuntimeError("disk on fire")
        assert set(_statuses(client, ours)) <= {"cancelling", "cancelled"}
        assert _statuses(client, [other]) == ["processing"]
    assert "the run crashed (RuntimeError)" in guard.reason


@pytest.mark.parametrize(("on_timeout", "cancelled"), [("keep", False), ("cancel", True)])
def test_a_timeout_follows_on_timeout(slow, on_timeout: str, cancelled: bool) -> None:
    config = _config(on_timeout=on_timeout)
    guard = RunGuard(config, sweep_s=0.05, cancel_wait_s=10)
    with BatchClient(slow.url) as client:
        ours, _ = _in_flight(client, config)
        with pytest.raises(WaitTimeoutError), guard.protect(client):
            raise WaitTimeoutError(ours[0], 1.0)
        statuses = set(_statuses(client, ours))
    if cancelled:
        assert statuses == {"cancelled"} and len(guard.timeout_outcome.batches) == 2
    else:
        assert statuses == {"processing"} and guard.timeout_outcome is None


def test_ctrl_c_aborts_the_run_once_and_a_second_stops_it_at_once(slow) -> None:
    config = _config()
    guard = RunGuard(config, sweep_s=0.05)
    with BatchClient(slow.url) as client:
        _in_flight(client, config, shards=1)
        with pytest.raises(KeyboardInterrupt), guard.protect(client):
            os.kill(os.getpid(), signal.SIGINT)  # the first: the run cancels and ends itself
            assert guard.aborted and guard.signal == signal.SIGINT
            assert "Ctrl-C" in guard.reason
            os.kill(os.getpid(), signal.SIGINT)  # the second: at once, as without a guard
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
