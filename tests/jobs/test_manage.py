"""A job's batches found by their names on a real local server, grouped into jobs."""

from __future__ import annotations

from datetime import UTC, datetime

from tablebatch.api import BatchClient
from tablebatch.jobs.config import parse_config
from tablebatch.jobs.guard import run_prefixes
from tablebatch.jobs.manage import (
    cancel_batches,
    group_jobs,
    iter_all_batches,
    job_batches,
    job_open_batches,
)
from tablebatch.jobs.naming import batch_name, parse_batch_name
from tablebatch.jobs.status_view import short_age
from tests.helpers import make_requests

CONFIG = {
    "name": "a--b",  # a job name may hold "--" itself
    "kind": "evaluation",
    "input": {"path": "x.csv", "id_column": "id"},
    "prompt": {"template": "{q}"},
    "models": ["m1", "m2"],
    "reference_column": "ref",
    "scoring": "judge",
    "judge": {"model": "j"},
}


def test_a_batch_name_says_its_job_stage_attempt_and_shard() -> None:
    config = parse_config(dict(CONFIG), "test")
    name = batch_name(config, "answer", config.fingerprint("m1"), 2, 13)
    parsed = parse_batch_name(name)
    assert parsed is not None
    assert (parsed.job, parsed.stage, parsed.attempt, parsed.shard) == ("a--b", "answer", 2, 13)
    assert parsed.fingerprint == config.fingerprint("m1")
    assert parse_batch_name("my-own-batch") is None
    assert parse_batch_name("x--answer-0123abcd--a1--s") is None
    prefixes = run_prefixes(config)  # both models' answers and both judges
    assert len(prefixes) == 4 and any(name.startswith(p) for p in prefixes)
    assert not any(batch_name(config, "answer", "ffffffff", 1, 0).startswith(p) for p in prefixes)


def test_short_ages() -> None:
    assert [short_age(s) for s in (None, 5, 185, 7800, 3 * 86400 + 4 * 3600)] == [
        "?",
        "5s",
        "3m05s",
        "2h10m",
        "3d4h",
    ]


def test_jobs_are_found_on_every_page_and_cancelled(server_factory) -> None:
    # pages of 2, at most 3: the large pages asked first are refused, every page is read
    limits = {"page_default": 2, "page_max": 3}
    server = server_factory(limits=limits, faults={"processing_delay_s": 60})
    with BatchClient(server.url) as client:
        made = {}
        for job in ("alpha", "beta"):
            for shard in range(3):
                name = f"{job}--answer-0123abcd--a1--s{shard:04d}"
                made[name] = client.create_batch(name, model="grok-4")
        client.create_batch("not-ours", model="grok-4")
        started = made["alpha--answer-0123abcd--a1--s0001"]
        client.add_requests(started.id, make_requests(3))
        client.start(started.id)

        every = list(iter_all_batches(client))
        assert len(every) == 7
        jobs, foreign = group_jobs(every)
        assert [j.job for j in jobs] == ["beta", "alpha"] and foreign == 1  # newest first
        assert jobs[1].total("request") == 3 and jobs[1].state == "running"
        assert jobs[1].newest is not None and jobs[1].newest <= datetime.now(UTC)
        assert {b.name for b in job_batches(client, "alpha")} == {
            n for n in made if n.startswith("alpha")
        }

        found = job_open_batches(client, "alpha")
        assert len(found) == 3
        outcome = cancel_batches(client, found, timeout_s=20, poll_s=0.02)
        assert outcome.not_ended == []
        assert {b.status for b in outcome.batches} == {"cancelled"}
        assert outcome.answered + outcome.stopped + outcome.failed == 3
        assert job_open_batches(client, "alpha") == []
        assert len(job_open_batches(client, "beta")) == 3  # another job's: untouched


def test_a_provider_dialects_ended_batches_are_not_open(server_factory) -> None:
    """xAI batches have no status string: a client that did not start one reads it
    ``pending`` even once every request ended. It is open only while requests are left."""
    import time

    from tablebatch.api.dialects import open_batch_api

    server = server_factory(faults={"processing_rate": 20})
    with open_batch_api("xai", f"{server.base_url}/xai/v1", "any") as runner:
        batch = runner.create_batch("gamma--answer-0123abcd--a1--s0000", model="grok-4")
        runner.add_requests(batch.id, make_requests(4))
    with open_batch_api("xai", f"{server.base_url}/xai/v1", "any") as looker:
        (found,) = job_open_batches(looker, "gamma")
        assert found.status == "pending" and found.pending_count > 0
        deadline = time.monotonic() + 20
        while (ended := looker.get_batch(batch.id)).pending_count:
            assert time.monotonic() < deadline, ended
            time.sleep(0.05)
        assert ended.status == "pending"  # as this client sees it
        assert job_open_batches(looker, "gamma") == []  # but nothing is left to cancel
