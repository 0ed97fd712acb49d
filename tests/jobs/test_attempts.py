"""The attempt loop as plain Python (no Prefect): shards within the concurrency bound, failed
rows sent again, invalid answers retried where the kind says so, the error budget, and a
stopped run that sends no further shard. Shards are "sent" by a fake that answers from a
script, so each rule is seen on its own."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pytest

from tablebatch.api import Batch
from tablebatch.jobs.attempts import Systemic, check_budget, run_attempts
from tablebatch.jobs.config import parse_config
from tablebatch.jobs.naming import content_digest
from tablebatch.jobs.plan import plan_requests
from tablebatch.jobs.rows import RESULT_SCHEMA, no_answer, results_table
from tablebatch.jobs.submit import Shard, ShardOutcome, StageRun


class NoBatches:
    """A client with no batches yet (the loop lists an attempt's batches once)."""

    lists_by_prefix = False
    sleep = staticmethod(lambda s: None)

    def iter_batches(self, **filters: Any) -> Iterator[Batch]:
        return iter(())


def _run(**batch: object) -> StageRun:
    config = parse_config(
        {
            "name": "loop",
            "kind": "classification",
            "input": {"path": "x.csv", "id_column": "id"},
            "prompt": {"template": "{text}"},
            "model": "m",
            "labels": ["yes", "no"],
            "batch": batch,
        },
        "loop.yaml",
    )
    return StageRun(config, "answer", "m", "fp")


def _rows(run: StageRun, n: int):
    """The rows to send, and each row's request id by its row id."""
    table = pa.table({"id": [f"r{i}" for i in range(n)], "text": [f"t{i}" for i in range(n)]})
    plan = plan_requests(table, run.config, table["id"].combine_chunks(), "m")
    return plan.rows, dict(zip(table["id"].to_pylist(), plan.custom_ids.to_pylist(), strict=True))


def _answered(shard: Shard, fails: Callable[[str, int], bool]) -> ShardOutcome:
    ids = shard.rows.ids.to_pylist()
    rows = {name: [] for name in RESULT_SCHEMA.names}
    for custom_id in ids:
        failed = fails(custom_id, shard.attempt)
        rows["custom_id"].append(custom_id)
        rows["status"].append("failed" if failed else "completed")
        rows["answer"].append(None if failed else "yes")
        rows["error"].append("server_error: boom" if failed else None)
        rows["batch_id"].append(f"b{shard.attempt}-{shard.index}")
        rows["prompt_tokens"].append(1)
        rows["completion_tokens"].append(1)
    table = results_table(rows).append_column("reason", pa.nulls(len(ids), pa.string()))
    return ShardOutcome([{"name": shard.name}], table, sent=len(ids))


def _sender(fails: Callable[[str, int], bool], pool: ThreadPoolExecutor, seen: list[Shard]):
    lock = threading.Lock()
    state = {"now": 0, "most": 0}

    def send(client: Any, shard: Shard) -> Future:
        seen.append(shard)

        def work() -> ShardOutcome:
            with lock:
                state["now"] += 1
                state["most"] = max(state["most"], state["now"])
            try:
                return _answered(shard, fails)
            finally:
                with lock:
                    state["now"] -= 1

        return pool.submit(work)

    return send, state


def test_every_row_once_in_shards_within_the_concurrency_bound() -> None:
    run = _run(max_requests=3, concurrency=2)
    seen: list[Shard] = []
    with ThreadPoolExecutor(8) as pool:
        send, state = _sender(lambda c, a: False, pool, seen)
        rows, ids = _rows(run, 10)
        outcome = run_attempts(NoBatches(), run, rows, send)
    assert [len(s.rows) for s in seen] == [3, 3, 3, 1]
    last = seen[-1]  # a batch is named by what it holds: the same rows, the same name
    assert last.name == f"loop--answer-fp--a1--{content_digest(last.rows.ids.to_pylist())}"
    assert state["most"] <= 2
    assert sorted(outcome.results["custom_id"].to_pylist()) == sorted(ids.values())
    assert set(outcome.results["attempts"].to_pylist()) == {1}
    assert outcome.sent == 10 and len(outcome.batches) == 4


def test_failed_rows_go_again_until_they_pass_or_attempts_run_out() -> None:
    run = _run(max_requests=4, max_attempts=3, error_budget=1.0)
    rows, ids = _rows(run, 8)
    flaky = {ids["r1"]: 1, ids["r5"]: 2, ids["r7"]: 9}  # fails up to this attempt
    seen: list[Shard] = []
    with ThreadPoolExecutor(4) as pool:
        send, _ = _sender(lambda c, a: a <= flaky.get(c, 0), pool, seen)
        outcome = run_attempts(NoBatches(), run, rows, send)
    final = {r["custom_id"]: r for r in outcome.results.to_pylist()}
    r1, r5, r7 = final[ids["r1"]], final[ids["r5"]], final[ids["r7"]]
    assert r1["status"] == "completed" and r1["attempts"] == 2
    assert r5["status"] == "completed" and r5["attempts"] == 3
    assert r7["status"] == "failed" and r7["attempts"] == 3
    assert [sorted(s.rows.ids.to_pylist()) for s in seen if s.attempt > 1] == [
        sorted([ids["r1"], ids["r5"], ids["r7"]]),
        sorted([ids["r5"], ids["r7"]]),
    ]


def test_past_the_error_budget_the_loop_stops_with_what_it_has() -> None:
    run = _run(max_requests=20, max_attempts=3, error_budget=0.5)
    seen: list[Shard] = []
    with ThreadPoolExecutor(2) as pool:
        rows, ids = _rows(run, 20)
        send, _ = _sender(lambda c, a: c != ids["r0"], pool, seen)
        with pytest.raises(Systemic, match=r"19 of 20 requests failed .*server_error: boom") as e:
            run_attempts(NoBatches(), run, rows, send)
    assert {s.attempt for s in seen} == {1}  # no row-by-row retry of a systemic failure
    kept = e.value.outcome.results
    assert (
        kept.num_rows == 20
        and kept.filter(pa.compute.equal(kept["status"], "completed")).num_rows == 1
    )


def test_a_few_rows_failing_again_in_a_retry_are_not_systemic() -> None:
    one = no_answer(pa.array(["k1"]), "failed", "no_result", "api_error: injected")
    with pytest.raises(Systemic, match="1 of 1 requests failed"):
        check_budget(0.5, one)  # a first attempt where everything failed: a pattern
    check_budget(0.5, one, retry=True)  # the last flaky row, retried alone: bad luck
    many = no_answer(pa.array([f"k{i}" for i in range(12)]), "failed", "no_result", "boom")
    with pytest.raises(Systemic, match="12 of 12"):
        check_budget(0.5, many, retry=True)  # ten or more failures are a pattern anyway


def test_rows_stopped_by_a_cancel_do_not_count_against_the_budget() -> None:
    ids = pa.array([f"c{i}" for i in range(30)])
    stopped = no_answer(ids, "cancelled", "cancelled", "cancelled: by someone")
    check_budget(0.1, stopped.set_column(1, "status", pa.array(["failed"] * 30)))  # no raise


def test_a_stopped_run_sends_no_further_shard_or_attempt(monkeypatch) -> None:
    run = _run(max_requests=2, concurrency=1, max_attempts=3, error_budget=1.0)
    seen: list[Shard] = []
    monkeypatch.setattr("tablebatch.jobs.attempts.stopping", lambda: len(seen) >= 2)
    with ThreadPoolExecutor(2) as pool:
        send, _ = _sender(lambda c, a: True, pool, seen)
        run_attempts(NoBatches(), run, _rows(run, 10)[0], send)
    assert len(seen) == 2 and {s.attempt for s in seen} == {1}
