"""Throughput of the local Batch API server, end to end over HTTP.

The server runs in a subprocess (``python -m flows.cli server --port 0``), so the
client here does not share its GIL, and is stopped at the end. One batch of N
short product-review classification requests goes through three timed phases:

1. accept  - the requests are POSTed to ``/v1/batches/{id}/requests`` in calls of
   ``--call-size`` over one keep-alive connection. Every call's JSON is built and
   serialised with orjson before the clock starts, so client encoding is not
   measured. Figure: requests accepted per second.
2. process - ``POST /v1/batches/{id}/start``, then ``GET /v1/batches/{id}`` every
   20 ms until the batch is completed (offline backend). Figure: request_count
   divided by the time from the start call to the first poll that sees it completed.
3. serve   - every result is paged with ``limit=--page-size`` following the
   ``after`` cursor; each page is parsed with orjson and every custom_id must be
   seen exactly once, N in all. Figure: results served per second (the client's
   parsing and checking is inside the timing, and shown apart).

The client's garbage collector is frozen and off while the phases are timed (its
objects are freed by reference counting), so that its pauses do not count
against the server.

The target for each figure is at least 20,000 per second. The script exits
non-zero when a phase fails (an HTTP error, a count mismatch, a timeout), not when
a target is missed.

Run it from the repository root with the project's venv:

    python benchmarks/server_throughput.py --requests 100000
    python benchmarks/server_throughput.py --requests 100000 --page-size 10000
    python benchmarks/server_throughput.py --db :memory:
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

import httpx
import orjson

TARGET_PER_S = 20_000.0
POLL_INTERVAL_S = 0.020
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
MODEL = "offline-model"
QUESTION = "Is this review positive or negative?"
READY_MARKER = "tablebatch server listening on "

_OPENINGS = [
    "I bought this {product} for my {person} last month.",
    "Ordered the {product} after reading a lot of reviews.",
    "This is my second {product} from this brand.",
    "Got the {product} on sale and used it every day for a few weeks.",
    "I needed a new {product} for the {place} and picked this one.",
]
_GOOD = [
    "It works great and the build quality is solid.",
    "Setup was easy and it has been reliable so far.",
    "The battery lasts all day and charging is fast.",
    "It feels sturdy and looks even better than the photos.",
    "Customer service was friendly and helpful when I had a question.",
    "For the price it is excellent value and I would recommend it.",
    "It is quiet, comfortable to use and does exactly what it says.",
]
_BAD = [
    "It stopped working after two weeks and I had to return it.",
    "The plastic feels cheap and flimsy and one clip broke on day one.",
    "Shipping was late and the box arrived damaged.",
    "The instructions were wrong and support never answered my emails.",
    "It is much slower than advertised and the app keeps crashing.",
    "Honestly a waste of money, it is overpriced for what you get.",
    "The size was not as described and it leaks when full.",
]
_NEUTRAL = [
    "The color is a bit darker than expected.",
    "It comes with a short cable and a small manual.",
    "My {person} uses it mostly on weekends.",
    "It took about ten minutes to unpack and set up in the {place}.",
    "The packaging could use less plastic.",
]
_CLOSINGS = [
    "Overall I am happy with it.",
    "Would buy again.",
    "I would not buy this again.",
    "Not sure yet, will update later.",
    "Three stars from me.",
    "Five stars.",
]
_PRODUCTS = [
    "blender",
    "coffee grinder",
    "desk lamp",
    "backpack",
    "phone case",
    "electric kettle",
    "vacuum cleaner",
    "toaster",
    "bluetooth speaker",
    "water bottle",
    "air fryer",
    "office chair",
]
_PEOPLE = ["wife", "husband", "son", "daughter", "mother", "roommate", "partner"]
_PLACES = ["kitchen", "garage", "office", "bedroom", "camper", "dorm room"]


class PhaseFailed(Exception):
    """A phase could not be completed; the message says why."""


@dataclass(frozen=True)
class Server:
    """The server subprocess and its base URL (ending in ``/v1``)."""

    process: subprocess.Popen[str]
    url: str
    stderr_path: str


def review(rng: random.Random) -> str:
    """One synthetic product review of 20 to 60 words."""
    fill = {
        "product": rng.choice(_PRODUCTS),
        "person": rng.choice(_PEOPLE),
        "place": rng.choice(_PLACES),
    }
    mood = rng.random()
    pool = _GOOD if mood < 0.45 else _BAD if mood < 0.9 else _GOOD + _BAD
    target = rng.randint(20, 60)
    sentences = [rng.choice(_OPENINGS).format(**fill)]
    words = len(sentences[0].split())
    while words < target:
        sentence = rng.choice(pool) if rng.random() < 0.75 else rng.choice(_NEUTRAL)
        sentence = sentence.format(**fill)
        if words + len(sentence.split()) > 60:
            break
        sentences.append(sentence)
        words += len(sentence.split())
    closing = rng.choice(_CLOSINGS)
    if words + len(closing.split()) <= 60:
        sentences.append(closing)
    return " ".join(sentences)


def build_calls(n: int, call_size: int, seed: int) -> tuple[list[bytes], list[str]]:
    """The serialised bodies of the add-requests calls, and all custom_ids in order."""
    rng = random.Random(seed)
    custom_ids = [f"review-{i:07d}" for i in range(n)]
    calls: list[bytes] = []
    for start in range(0, n, call_size):
        requests = [
            {
                "custom_id": custom_id,
                "body": {
                    "model": MODEL,
                    "messages": [{"role": "user", "content": f"{QUESTION}\n\n{review(rng)}"}],
                },
            }
            for custom_id in custom_ids[start : start + call_size]
        ]
        calls.append(orjson.dumps({"requests": requests}))
    return calls, custom_ids


def _drain(stream: IO[str]) -> None:
    """Read a pipe to its end so that the server never blocks writing to it."""
    for _ in stream:
        pass


@contextmanager
def run_server(db: str, requests: int = 0) -> Iterator[Server]:
    """Start ``tablebatch server --port 0`` in a subprocess; stop it when the block ends.

    Its per-batch limits are raised to hold ``requests`` in the one batch measured."""
    env = {
        **os.environ,
        "TABLEBATCH_SERVER_LIMITS__MAX_REQUESTS_PER_BATCH": str(max(requests, 100_000)),
        "TABLEBATCH_SERVER_LIMITS__MAX_BYTES_PER_BATCH": str(max(requests * 1024, 256 * 2**20)),
    }
    log_dir = tempfile.mkdtemp(prefix="tablebatch-bench-log-")
    stderr_path = os.path.join(log_dir, "server.stderr")
    command = [sys.executable, "-m", "flows.cli", "server", "--port", "0", "--db", db, "--no-auth"]
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            env=env,
        )
    try:
        url = _wait_ready(process, stderr_path)
        assert process.stdout is not None
        threading.Thread(target=_drain, args=(process.stdout,), daemon=True).start()
        yield Server(process, url, stderr_path)
    finally:
        stop_server(process)
        shutil.rmtree(log_dir, ignore_errors=True)


def _wait_ready(process: subprocess.Popen[str], stderr_path: str) -> str:
    """The URL the server prints once it listens; PhaseFailed if it does not come up."""
    found: list[str] = []
    assert process.stdout is not None
    stdout = process.stdout

    def read() -> None:
        for line in stdout:
            if READY_MARKER in line:
                found.append(line.split(READY_MARKER, 1)[1].split()[0])
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(READY_TIMEOUT_S)
    if not found:
        with open(stderr_path) as f:
            tail = f.read()[-2000:]
        code = process.poll()
        raise PhaseFailed(
            f"the server did not print its URL within {READY_TIMEOUT_S:.0f} s "
            f"(exit code {code}); its stderr ends with:\n{tail}"
        )
    return found[0]


def stop_server(process: subprocess.Popen[str]) -> None:
    """SIGINT, then wait; kill if it has not stopped in time."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_TIMEOUT_S)


def _check(response: httpx.Response, what: str) -> dict[str, object]:
    if response.status_code != 200:
        raise PhaseFailed(f"{what}: HTTP {response.status_code}: {response.text[:500]}")
    return orjson.loads(response.content)


def phase_accept(client: httpx.Client, calls: list[bytes], n: int) -> tuple[str, float]:
    """Create a batch and add every call; returns the batch id and the elapsed seconds."""
    batch = _check(
        client.post("/batches", json={"name": "server-throughput", "model": MODEL}),
        "create batch",
    )
    batch_id = str(batch["id"])
    path = f"/batches/{batch_id}/requests"
    headers = {"content-type": "application/json"}
    started = time.perf_counter()
    last: dict[str, object] = {}
    for i, body in enumerate(calls):
        last = _check(client.post(path, content=body, headers=headers), f"add call {i}")
    elapsed = time.perf_counter() - started
    if last.get("request_count") != n:
        raise PhaseFailed(f"accept: the batch holds {last.get('request_count')} requests, not {n}")
    return batch_id, elapsed


def phase_process(
    client: httpx.Client, batch_id: str, n: int, timeout_s: float
) -> tuple[float, int]:
    """Start the batch and poll until it completes; returns the elapsed seconds and polls."""
    started = time.perf_counter()
    _check(client.post(f"/batches/{batch_id}/start"), "start")
    polls = 0
    while True:
        batch = _check(client.get(f"/batches/{batch_id}"), "poll")
        polls += 1
        status = batch["status"]
        if status == "completed":
            elapsed = time.perf_counter() - started
            break
        if status in ("failed", "cancelled"):
            raise PhaseFailed(f"process: the batch ended {status}: {batch.get('error')}")
        if time.perf_counter() - started > timeout_s:
            raise PhaseFailed(
                f"process: not completed after {timeout_s:.0f} s "
                f"({batch['completed_count']} of {batch['request_count']} done)"
            )
        time.sleep(POLL_INTERVAL_S)
    if batch["request_count"] != n or batch["completed_count"] != n:
        raise PhaseFailed(
            f"process: request_count {batch['request_count']}, completed_count "
            f"{batch['completed_count']}, expected {n}"
        )
    return elapsed, polls


def phase_serve(
    client: httpx.Client, batch_id: str, custom_ids: list[str], page_size: int
) -> tuple[float, float, int]:
    """Page every result; returns the elapsed seconds, the client's share of it, and pages."""
    expected = set(custom_ids)
    seen: set[str] = set()
    path = f"/batches/{batch_id}/results"
    params: dict[str, str | int] = {"limit": page_size}
    pages = count = 0
    client_s = 0.0
    started = time.perf_counter()
    while True:
        response = client.get(path, params=params)
        mark = time.perf_counter()
        if response.status_code != 200:
            raise PhaseFailed(f"serve: page {pages}: HTTP {response.status_code}: {response.text}")
        page = orjson.loads(response.content)
        data = page["data"]
        pages += 1
        for item in data:
            custom_id = item["custom_id"]
            if custom_id not in expected:
                raise PhaseFailed(f"serve: unknown custom_id {custom_id!r}")
            if custom_id in seen:
                raise PhaseFailed(f"serve: custom_id {custom_id!r} served twice")
            if item["status"] != "completed":
                raise PhaseFailed(f"serve: {custom_id!r} is {item['status']}: {item.get('error')}")
            seen.add(custom_id)
        count += len(data)
        client_s += time.perf_counter() - mark
        if not page["has_more"]:
            break
        if not data:
            raise PhaseFailed("serve: an empty page says has_more")
        params = {"limit": page_size, "after": data[-1]["id"]}
    elapsed = time.perf_counter() - started
    if count != len(custom_ids) or seen != expected:
        raise PhaseFailed(
            f"serve: {count} results served ({len(seen)} distinct), expected {len(custom_ids)}"
        )
    return elapsed, client_s, pages


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def _verdict(rate: float) -> str:
    return "meets" if rate >= TARGET_PER_S else "MISSES"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--requests", type=int, default=100_000, help="N requests (default 100000)")
    p.add_argument("--call-size", type=int, default=1000, help="requests per add call")
    p.add_argument("--page-size", type=int, default=1000, help="results per page (limit)")
    p.add_argument("--db", default=None, help="SQLite path or ':memory:' (default: a temp file)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic reviews")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds allowed for processing")
    args = p.parse_args(argv)
    for name in ("requests", "call_size", "page_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the three phases and print the report; 0 unless a phase failed."""
    args = parse_args(argv)
    n: int = args.requests
    tmp_dir = None
    db: str = args.db
    if db is None:
        tmp_dir = tempfile.mkdtemp(prefix="tablebatch-bench-")
        db = os.path.join(tmp_dir, "server.db")

    t0 = time.perf_counter()
    calls, custom_ids = build_calls(n, args.call_size, args.seed)
    payload_mb = sum(len(c) for c in calls) / 2**20
    print(
        f"built {n} requests in {len(calls)} calls ({payload_mb:.1f} MiB) "
        f"in {time.perf_counter() - t0:.2f} s",
        flush=True,
    )

    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        with (
            run_server(db, n) as server,
            httpx.Client(base_url=server.url, timeout=300.0, trust_env=False) as client,
        ):
            print(f"server {server.url} (pid {server.process.pid}, db {db})", flush=True)
            batch_id, accept_s = phase_accept(client, calls, n)
            print(f"accept:  {n} requests in {accept_s:.3f} s", flush=True)
            process_s, polls = phase_process(client, batch_id, n, args.timeout)
            print(f"process: {n} requests in {process_s:.3f} s ({polls} polls)", flush=True)
            serve_s, client_s, pages = phase_serve(client, batch_id, custom_ids, args.page_size)
            print(f"serve:   {n} results in {serve_s:.3f} s ({pages} pages)", flush=True)
    except (PhaseFailed, httpx.HTTPError) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        gc.enable()
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)

    figures = [
        ("accepted", _rate(n, accept_s), f"{len(calls)} calls of {args.call_size}"),
        ("processed", _rate(n, process_s), f"start to completed, {polls} polls"),
        (
            "served",
            _rate(n, serve_s),
            f"{pages} pages of {args.page_size}, client parse+check {client_s:.3f} s",
        ),
    ]
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    print()
    print("tablebatch server throughput")
    print(f"  cores: {os.cpu_count()} (usable {affinity}), python {sys.version.split()[0]}")
    print(
        f"  N={n} call size={args.call_size} page size={args.page_size} "
        f"db={'temp file' if tmp_dir else db}"
    )
    for what, rate, note in figures:
        print(
            f"  {what:<9} {rate:>10,.0f} /s  {_verdict(rate)} target >= {TARGET_PER_S:,.0f}/s"
            f"  ({note})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
