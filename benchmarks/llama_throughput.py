"""Answering throughput of the llama backend beside its floor, on the same cores.

Two workloads, each answered twice in one run, one after the other:

- ``sample``: the 24 requests of ``configs/review-sentiment.yaml`` (its system
  message, template, ``temperature: 0, max_tokens: 16``) over ``data/reviews.csv``;
- ``table``: the same job over a synthetic table of ``--rows`` reviews
  (``benchmarks/make_reviews.py``, default 1,000 rows).

The **floor** is llama-cpp-python called directly in a loop: one ``Llama`` of the
same GGUF with ``n_threads`` = the usable cores, ``create_chat_completion`` on each
request's arguments (translated by the same code as the backend's), nothing else.
The **job** is the local server with ``--backend llama`` (a pool of model processes
sized to the machine) answering one batch of the same requests: the clock runs from
the ``start`` call to the first poll (every 20 ms) that sees the batch completed, so
it counts the worker, the pool, SQLite and the HTTP poll, not the client's upload.

Figures per workload and side: requests/s, generated (completion) tokens/s; then
the job's ratio to the floor (target >= 0.9). Both sides are warmed up first (the
model loaded, one request answered). The script exits non-zero when a side fails
(an error, a failed request), not when the target is missed.

Run it from the repository root with the [llama] extra installed (and the
benchmark lock, so that no other benchmark shares the cores)::

    flock /tmp/tablebatch-bench.lock .venv/bin/python benchmarks/llama_throughput.py
    flock /tmp/tablebatch-bench.lock .venv/bin/python benchmarks/llama_throughput.py --rows 200
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.make_reviews import write_reviews  # noqa: E402
from tablebatch.io import read_table  # noqa: E402
from tablebatch.jobs.build import check_table  # noqa: E402
from tablebatch.jobs.config import load_config  # noqa: E402
from tablebatch.jobs.plan import plan_requests  # noqa: E402

TARGET = 0.9
POLL_S = 0.02


def job_bodies(table_path: Path | None) -> list[bytes]:
    """The request bodies the sample job sends, over its own table or another one."""
    overrides = [f"input.path={table_path}"] if table_path else []
    config = load_config(str(ROOT / "configs/review-sentiment.yaml"), overrides)
    path = table_path or ROOT / config.input.path
    table = read_table(str(path), string_columns=[config.input.id_column])
    ids = check_table(table, config, str(path))
    plan = plan_requests(table, config, ids, config.model_names[0])
    bodies: list[bytes] = []
    for start in range(0, len(plan.rows), 1000):
        requests, _ = plan.rows.slice(start, 1000).render()
        for _, item in requests:
            data = orjson.loads(item)
            bodies.append(orjson.dumps(data.get("body", data)))
    return bodies


def floor(bodies: list[bytes], threads: int) -> tuple[float, int]:
    """llama-cpp-python in a loop: (seconds, completion tokens)."""
    from llama_cpp import Llama

    from tablebatch.server.backends.llama_model import chat_arguments, default_gguf

    llm = Llama(
        model_path=str(default_gguf()),
        n_ctx=2048,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    requests = [orjson.loads(b) for b in bodies]
    calls = [(r["messages"], r["model"], chat_arguments(r)) for r in requests]
    llm.create_chat_completion(messages=calls[0][0], **calls[0][2])  # warm
    tokens = 0
    began = time.perf_counter()
    for messages, model, args in calls:
        tokens += llm.create_chat_completion(messages=messages, model=model, **args)["usage"][
            "completion_tokens"
        ]
    seconds = time.perf_counter() - began
    llm.close()
    return seconds, tokens


def through_server(http: httpx.Client, bodies: list[bytes], name: str) -> tuple[float, int]:
    """One batch of ``bodies`` on the llama server: (seconds from start to completed,
    completion tokens)."""
    batch = http.post("/batches", json={"name": name, "model": "grok-4"}).json()
    for start in range(0, len(bodies), 1000):
        part = bodies[start : start + 1000]
        payload = (
            b'{"requests":['
            + b",".join(
                b'{"custom_id":"r%d","body":%s}' % (start + i, body) for i, body in enumerate(part)
            )
            + b"]}"
        )
        http.post(
            f"/batches/{batch['id']}/requests",
            content=payload,
            headers={"content-type": "application/json"},
        ).raise_for_status()
    began = time.perf_counter()
    http.post(f"/batches/{batch['id']}/start").raise_for_status()
    while True:
        state = http.get(f"/batches/{batch['id']}").json()
        if state["status"] in ("completed", "failed", "cancelled"):
            break
        time.sleep(POLL_S)
    seconds = time.perf_counter() - began
    if state["status"] != "completed" or state["failed_count"]:
        raise SystemExit(f"the batch did not complete cleanly: {state}")
    return seconds, state["usage"]["completion_tokens"]


def _load() -> str:
    """The machine's load average: others' work on the same cores moves both sides."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1000, help="rows of the synthetic table")
    parser.add_argument(
        "--floor-threads",
        type=int,
        default=None,
        help="n_threads of the floor's Llama (default: the usable cores)",
    )
    args = parser.parse_args(argv)

    from tablebatch.server import ServerSettings, serve_in_thread
    from tablebatch.server.backends.llama import pool_shape
    from tablebatch.server.backends.processes import usable_cores
    from tablebatch.server.settings import LlamaSettings

    load_before = _load()
    cores = usable_cores()
    threads = args.floor_threads or cores
    shape = pool_shape(LlamaSettings())
    with tempfile.TemporaryDirectory() as tmp:
        table = write_reviews(args.rows, Path(tmp) / "reviews.parquet")
        assert pq.read_metadata(table).num_rows == args.rows
        workloads = {"sample": job_bodies(None), f"table-{args.rows}": job_bodies(table)}
    print(
        f"llama backend vs llama-cpp-python in a loop; {cores} usable core(s); pool "
        f"{shape.processes} process(es) x {shape.threads} thread(s); floor: one Llama, "
        f"n_threads={threads}"
    )
    results: dict[str, dict[str, tuple[float, int]]] = {}
    with (
        serve_in_thread(ServerSettings(backend="llama")) as server,
        httpx.Client(base_url=server.url, timeout=60) as http,
    ):
        through_server(http, list(workloads["sample"][:2]), "warm-up")
        for name, bodies in workloads.items():
            results[name] = {
                "floor": floor(bodies, threads),
                "job": through_server(http, bodies, name),
            }
    print(f"load average (1, 5, 15 min): before {load_before}, after {_load()}")
    print(
        f"{'workload':<12} {'side':<6} {'requests':>8} {'seconds':>8} {'req/s':>8} "
        f"{'gen tok':>8} {'gen tok/s':>10}"
    )
    for name, sides in results.items():
        n = len(workloads[name])
        for side, (seconds, tokens) in sides.items():
            print(
                f"{name:<12} {side:<6} {n:>8} {seconds:>8.2f} {n / seconds:>8.2f} "
                f"{tokens:>8} {tokens / seconds:>10.1f}"
            )
        ratio = sides["floor"][0] / sides["job"][0]
        verdict = "meets" if ratio >= TARGET else "misses"
        print(f"{name:<12} ratio  job/floor requests/s = {ratio:.2f} ({verdict} {TARGET})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
