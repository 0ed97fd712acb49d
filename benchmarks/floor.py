"""The floor: the least code that does what a classification job does, timed by stage.

What it measures: the wall time of each stage of a classification job done with
no framework — read the input (pyarrow), render one chat-completions body per
row, submit batches (create, add in calls of 1000 pre-serialised with orjson,
start), wait (poll every 0.2 s), collect (page every result, 10,000 a page),
left-join the answers onto the input by ``custom_id`` in input order, and write
Parquet — plus the client time (total minus wait), the number of HTTP calls and
the peak RSS. It is the baseline that ``tablebatch run`` is compared with (see
``benchmarks/job_scale.py``). Batches go one after the other: submit all, then
wait for all, then collect all. No retries: any error ends the run.

Run it against a Batch API server, from the repository root::

    python -m flows.cli server --port 0 --db /tmp/x.db --no-auth     # prints its URL
    python benchmarks/make_reviews.py --rows 100000 --out /tmp/reviews.parquet
    python benchmarks/floor.py --url http://127.0.0.1:PORT/v1 \\
        --input /tmp/reviews.parquet --out /tmp/floor.parquet [--batch-size 10000] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

MODEL = "grok-4"
PROMPT = "Is this review positive or negative?\n\n"
ID_COLUMN = "review_id"
TEXT_COLUMN = "text"
CALL_SIZE = 1000
PAGE_SIZE = 10_000
POLL_INTERVAL_S = 0.2
STAGES = ("read", "render", "submit", "wait", "collect", "join", "write")
JSON_HEADERS = {"content-type": "application/json"}


class Calls:
    """One httpx client that counts its calls and fails on any non-200 answer."""

    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url.rstrip("/"), timeout=300.0, trust_env=False)
        self.count = 0

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The parsed JSON answer of one call."""
        self.count += 1
        response = self.client.request(method, path, **kwargs)
        if response.status_code != 200:
            raise RuntimeError(f"{method} {path}: HTTP {response.status_code}: {response.text}")
        return orjson.loads(response.content)


def read_table(path: str) -> pa.Table:
    """The input table, from Parquet or CSV."""
    if path.lower().endswith(".csv"):
        return pacsv.read_csv(path)
    return pq.ParquetFile(path).read()  # not pq.read_table: it imports pyarrow.dataset


def render(ids: list[str], texts: list[str]) -> list[bytes]:
    """The bodies of the add-requests calls for these rows, serialised."""
    calls = []
    for start in range(0, len(ids), CALL_SIZE):
        requests = [
            {
                "custom_id": "id-" + rid,
                "body": {
                    "model": MODEL,
                    "messages": [{"role": "user", "content": PROMPT + text}],
                    "temperature": 0,
                    "max_tokens": 16,
                },
            }
            for rid, text in zip(
                ids[start : start + CALL_SIZE], texts[start : start + CALL_SIZE], strict=True
            )
        ]
        calls.append(orjson.dumps({"requests": requests}))
    return calls


def run(url: str, input_path: str, out: str, batch_size: int = 10_000) -> dict[str, Any]:
    """Run the job; the figures (stage seconds, client time, calls, peak RSS)."""
    t: dict[str, float] = dict.fromkeys(STAGES, 0.0)
    started = time.perf_counter()
    api = Calls(url)
    try:
        mark = time.perf_counter()
        table = read_table(input_path)
        t["read"] = time.perf_counter() - mark

        ids = table[ID_COLUMN].cast(pa.string()).to_pylist()
        texts = table[TEXT_COLUMN].cast(pa.string()).to_pylist()
        run_tag = uuid.uuid4().hex[:8]
        batch_ids: list[str] = []
        min_calls = 0  # create, adds, start, one poll and the result pages of each batch
        for n, start in enumerate(range(0, len(ids), batch_size)):
            mark = time.perf_counter()
            end = start + batch_size
            size = min(batch_size, len(ids) - start)
            min_calls += 3 + math.ceil(size / CALL_SIZE) + math.ceil(size / PAGE_SIZE)
            calls = render(ids[start:end], texts[start:end])
            t["render"] += time.perf_counter() - mark

            mark = time.perf_counter()
            batch = api.call(
                "POST", "/batches", json={"name": f"floor-{run_tag}-{n}", "model": MODEL}
            )
            for body in calls:
                api.call(
                    "POST", f"/batches/{batch['id']}/requests", content=body, headers=JSON_HEADERS
                )
            api.call("POST", f"/batches/{batch['id']}/start")
            batch_ids.append(batch["id"])
            t["submit"] += time.perf_counter() - mark
        del ids, texts

        mark = time.perf_counter()
        for batch_id in batch_ids:
            while True:
                status = api.call("GET", f"/batches/{batch_id}")["status"]
                if status == "completed":
                    break
                if status in ("failed", "cancelled", "cancelling"):
                    raise RuntimeError(f"batch {batch_id} ended {status}")
                time.sleep(POLL_INTERVAL_S)
        t["wait"] = time.perf_counter() - mark

        mark = time.perf_counter()
        id_chunks: list[pa.Array] = []
        answer_chunks: list[pa.Array] = []
        for batch_id in batch_ids:
            params: dict[str, Any] = {"limit": PAGE_SIZE}
            while True:
                page = api.call("GET", f"/batches/{batch_id}/results", params=params)
                data = page["data"]
                id_chunks.append(pa.array([r["custom_id"] for r in data], pa.string()))
                answer_chunks.append(
                    pa.array(
                        [
                            r["response"]["choices"][0]["message"]["content"]
                            if r.get("response")
                            else None
                            for r in data
                        ],
                        pa.string(),
                    )
                )
                if not page["has_more"]:
                    break
                params = {"limit": PAGE_SIZE, "after": data[-1]["id"]}
        answers = pa.table(
            {
                "custom_id": pa.chunked_array(id_chunks, pa.string()),
                "answer": pa.chunked_array(answer_chunks, pa.string()),
            }
        )
        t["collect"] = time.perf_counter() - mark
    finally:
        api.client.close()

    mark = time.perf_counter()
    # a left join that keeps input order: each input row's position among the answers
    custom_ids = pc.binary_join_element_wise("id-", table[ID_COLUMN].cast(pa.string()), "")
    position = pc.index_in(custom_ids, value_set=answers["custom_id"].combine_chunks())
    joined = table.append_column("answer", answers["answer"].take(position))
    t["join"] = time.perf_counter() - mark

    mark = time.perf_counter()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(joined, out)
    t["write"] = time.perf_counter() - mark

    total = time.perf_counter() - started
    rows = table.num_rows
    return {
        "rows": rows,
        "answered": rows - joined["answer"].null_count,
        "batches": len(batch_ids),
        "stages": {k: round(v, 4) for k, v in t.items()},
        "total_s": round(total, 4),
        "client_s": round(total - t["wait"], 4),
        "rows_per_s": round(rows / total, 1) if total > 0 else None,
        "http_calls": api.count,
        "min_http_calls": min_calls,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--url", required=True, help="Batch API base URL, ending in /v1")
    p.add_argument("--input", required=True, help="input table, .parquet or .csv")
    p.add_argument("--out", required=True, help="output Parquet file")
    p.add_argument("--batch-size", type=int, default=10_000, help="requests per batch")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        p.error("--batch-size must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the floor and print its figures."""
    args = parse_args(argv)
    figures = run(args.url, args.input, args.out, args.batch_size)
    if args.json:
        print(json.dumps(figures))
        return 0
    print(
        f"floor: {figures['rows']} rows ({figures['answered']} answered) "
        f"in {figures['batches']} batch(es)"
    )
    for stage, seconds in figures["stages"].items():
        print(f"  {stage:<8} {seconds:>9.3f} s")
    print(f"  {'total':<8} {figures['total_s']:>9.3f} s  ({figures['rows_per_s']:,.0f} rows/s)")
    print(f"  client   {figures['client_s']:>9.3f} s  (total minus wait)")
    print(f"  http     {figures['http_calls']:>9} calls (minimum {figures['min_http_calls']})")
    print(f"  peak RSS {figures['peak_rss_mb']:>9.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
