"""A table that grows: N rows answered, then +1% new rows inserted at random positions.

What it measures, against one local Batch API server and a Prefect server started
beforehand (so that Prefect's own start-up is not counted; see ``job_scale.py``):

1. **full**: ``tablebatch run`` of a classification job over N synthetic reviews
   (``benchmarks/make_reviews.py``) with nothing on the API;
2. **incremental**: the same job over the table grown by N/100 new rows (new ids, texts
   that no other row has), each inserted at a random position (seeded), the old rows
   unchanged — a daily export that gained a day's rows, in no particular order.

Per run: requests sent (the report's own count, checked against the server's access
log of ``add`` calls and the batches it holds), client time (the report's), wall time,
CPU seconds and peak RSS of the ``tablebatch run`` process (VmHWM, as GNU time's
maximum resident set size) and of its largest child. Targets: the incremental run
sends exactly N/100 requests; its client time is well under a tenth of the full run's;
both peak under 1 GB.

Run it from the repository root, alone on the machine::

    flock /tmp/tablebatch-bench.lock .venv/bin/python benchmarks/incremental.py --rows 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from bench_procs import (
    BenchFailed,
    Finished,
    run_measured,
    start_batch_server,
    start_prefect_server,
    stop,
)
from job_scale import BATCH_SIZE, CONFIG, dataset

SEED = 20261202


def grown(table: pa.Table, new_rows: int, seed: int = SEED) -> pa.Table:
    """``table`` with ``new_rows`` new rows, each at a random position: ids ``new-…`` and
    texts taken from the table's own, each made unique (so each is one new request)."""
    rng = np.random.default_rng(seed)
    picked = table.take(pa.array(rng.integers(0, table.num_rows, new_rows)))
    ids = pa.array([f"new-{i:07d}" for i in range(new_rows)])
    texts = pc.binary_join_element_wise(
        picked["text"], pa.array([f"(added {i})" for i in range(new_rows)]), " "
    )
    extra = picked.set_column(0, table.schema.field(0).name, ids)
    extra = extra.set_column(extra.schema.get_field_index("text"), "text", texts)
    where = rng.integers(0, table.num_rows, new_rows)
    position = np.concatenate([np.arange(table.num_rows), where])
    order = np.argsort(position, kind="stable")  # each new row lands after a random old one
    return pa.concat_tables([table, extra.cast(table.schema)]).take(pa.array(order))


def run(project: Path, env: dict[str, str], name: str) -> tuple[Finished, dict]:
    """One ``tablebatch run`` of the project's job, measured; its process and report."""
    command = [sys.executable, "-m", "flows.cli", "run", "configs/scale.yaml"]
    done = run_measured(command, project, env, project / f"{name}.log")
    if done.returncode != 0:
        raise BenchFailed(f"the {name} run failed ({done.returncode}):\n{done.output[-3000:]}")
    report = project / "data" / "output" / "scale.parquet.report.json"
    return done, json.loads(report.read_text())


def server_requests(db: Path) -> int:
    """Every request the Batch API server holds (what was ever sent to it)."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]


def line(name: str, done: Finished, report: dict, sent_on_server: int) -> str:
    requests = report.get("requests", {})
    timings = report.get("timings", {})
    client = timings.get("client")
    return (
        f"{name:<12} {report['output_rows']:>9} {requests.get('sent', 0):>9} {sent_on_server:>9} "
        f"{requests.get('found', 0):>9} {client if client is not None else float('nan'):>9.1f} "
        f"{done.wall_s:>8.1f} {done.cpu_s:>8.1f} {done.peak_rss_mb:>9.0f} "
        f"{done.children_peak_rss_mb:>9.0f}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="N rows first (default 1000000)")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="requests per batch")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = p.parse_args(argv)
    data = dataset(args.rows)
    work = Path(tempfile.mkdtemp(prefix="tablebatch-incremental-"))
    processes = []
    try:
        home = work / "prefect-home"
        home.mkdir()
        env = {**os.environ, "PREFECT_HOME": str(home), "BENCH_KEY": "bench"}
        env |= {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
        prefect, api_url = start_prefect_server(home, env)
        processes.append((prefect, True))
        env["PREFECT_API_URL"] = api_url
        db = work / "batches.db"
        server, log = start_batch_server(db)
        processes.append((server, False))
        assert log.url is not None
        project = work / "project"
        (project / "configs").mkdir(parents=True)
        (project / "data").mkdir()
        (project / "pyproject.toml").write_text("")
        table = pq.read_table(data)
        pq.write_table(table, project / "data" / "reviews.parquet")
        config = CONFIG.format(url=log.url, batch_size=args.batch_size)
        (project / "configs" / "scale.yaml").write_text(config)

        full, full_report = run(project, env, "full")
        on_server = server_requests(db)
        new_rows = args.rows // 100
        pq.write_table(grown(table, new_rows), project / "data" / "reviews.parquet")
        del table
        incremental, inc_report = run(project, env, "incremental")
        inc_on_server = server_requests(db) - on_server

        print(f"\n{args.rows:,} rows, then +{new_rows:,} inserted at random positions")
        print(
            f"{'run':<12} {'rows':>9} {'sent':>9} {'on server':>9} {'found':>9} "
            f"{'client s':>9} {'wall s':>8} {'cpu s':>8} {'RSS MB':>9} {'child MB':>9}"
        )
        print(line("full", full, full_report, on_server))
        print(line("incremental", incremental, inc_report, inc_on_server))
        for name, report in (("full", full_report), ("incremental", inc_report)):
            stages = ", ".join(f"{k} {v:.1f}" for k, v in report.get("timings", {}).items())
            print(f"{name} stages (s): {stages}")
        full_client = full_report.get("timings", {}).get("client")
        inc_client = inc_report.get("timings", {}).get("client")
        if full_client and inc_client is not None:
            print(f"incremental client time / full: {inc_client / full_client:.3f} (target < 0.1)")
        sent = inc_report.get("requests", {}).get("sent")
        print(f"incremental requests sent: {sent} (target: exactly {new_rows})")
        ok = sent == new_rows == inc_on_server
        return 0 if ok else 1
    finally:
        for process, group in reversed(processes):
            stop(process, group=group)
        if args.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
