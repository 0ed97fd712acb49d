"""A classification job at scale: ``tablebatch run`` against the floor, stage by stage.

What it measures, for N synthetic reviews (``benchmarks/make_reviews.py``) against
one local Batch API server (``tablebatch server --access-log``):

- the floor (``benchmarks/floor.py``: the least code that does the job) and
- the real job (``python -m flows.cli run configs/scale.yaml`` in a temporary
  project, with a Prefect server started beforehand so that Prefect's own
  start-up is not counted),

each run in its own process: wall time per stage (the floor's own timers; the
job's from the ``timings`` of its report, when the report has them), client time
(total minus wait; flagged when the job's stages overlap, as its shards run at
the same time), CPU seconds (user+sys of the process), rows/s end to end (the
process's wall time), peak RSS (VmHWM of the process, polled every 0.1 s), and the
HTTP calls each made (access-log lines of the server between the runs), next to
the fewest calls the job needs. Then the ratio tablebatch/floor. The floor runs
first, on the same server and database.

Run it from the repository root (the dataset is cached in /tmp/tablebatch-bench/)::

    python benchmarks/job_scale.py --rows 100000
    python benchmarks/job_scale.py --rows 1000000 [--keep]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pyarrow.compute as pc
import pyarrow.parquet as pq
from bench_procs import BenchFailed, run_measured, start_batch_server, start_prefect_server, stop

HERE = Path(__file__).resolve().parent
CACHE_DIR = Path("/tmp/tablebatch-bench")
CALL_SIZE = 1000  # requests per add call
BATCH_SIZE = 10_000  # requests per batch, and results per page
# (floor stage, job stage): the same work under each one's name
STAGE_PAIRS = [
    ("read", "load"),
    ("render", "build"),
    ("submit", "submit"),
    ("wait", "wait"),
    ("collect", "collect"),
    ("join", "join"),
    ("write", "write"),
]
STAGES = {name for pair in STAGE_PAIRS for name in pair}
CONFIG = """\
name: scale
kind: classification
input: {{path: data/reviews.parquet, id_column: review_id}}
prompt: {{template: "Is this review positive or negative?\\n\\n{{text}}"}}
model: grok-4
params: {{temperature: 0, max_tokens: 16}}
labels: [positive, negative]
api: {{base_url: "{url}", api_key_env: BENCH_KEY}}
batch: {{max_requests: {batch_size}, poll_interval_s: 0.2, max_poll_interval_s: 1}}
output: {{path: data/output/scale.parquet}}
"""


# -- the runs -----------------------------------------------------------------------------


def dataset(rows: int) -> Path:
    """The cached table of ``rows`` reviews; made with make_reviews.py if missing."""
    path = CACHE_DIR / f"reviews-{rows}.parquet"
    if path.exists():
        print(f"dataset: {path} (cached)", flush=True)
        return path
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as tmp:
        part = Path(tmp) / path.name
        command = [sys.executable, str(HERE / "make_reviews.py"), "--rows", str(rows)]
        subprocess.run([*command, "--out", str(part)], check=True)
        os.replace(part, path)
    print(f"dataset: {path} (made)", flush=True)
    return path


@dataclass
class RunFigures:
    """What one run (the floor or the job) measured."""

    name: str
    stages: dict[str, float] = field(default_factory=dict)
    total_s: float | None = None
    wait_s: float | None = None
    wall_s: float = 0.0
    peak_rss_mb: float = 0.0
    children_peak_rss_mb: float = 0.0
    cpu_s: float = 0.0
    http_calls: int = 0
    note: str = ""

    @property
    def client_s(self) -> float | None:
        """Client time: the report's own (wall time less the spans spent only waiting for
        the server), else total minus wait (right when the stages do not overlap)."""
        if "client" in self.stages:
            return self.stages["client"]
        if self.total_s is None or self.wait_s is None:
            return None
        return self.total_s - self.wait_s

    @property
    def overlapping(self) -> bool:
        """Whether the stages add up to more than the total: they ran at the same time."""
        summed = sum(v for k, v in self.stages.items() if k in STAGES)
        return self.total_s is not None and summed > 1.1 * self.total_s


def run_floor(url: str, data: Path, work: Path, batch_size: int, env: dict[str, str]) -> RunFigures:
    """The floor in a subprocess, with ``--json``."""
    command = [sys.executable, str(HERE / "floor.py"), "--url", url, "--input", str(data)]
    command += ["--out", str(work / "floor.parquet"), "--batch-size", str(batch_size), "--json"]
    done = run_measured(command, work, env, work / "floor.log")
    if done.returncode != 0:
        raise BenchFailed(f"the floor failed ({done.returncode}):\n{done.output[-3000:]}")
    figures = json.loads(done.output.strip().splitlines()[-1])
    if figures["answered"] != figures["rows"]:
        raise BenchFailed(f"the floor answered {figures['answered']} of {figures['rows']} rows")
    return RunFigures(
        name="floor",
        stages=figures["stages"],
        total_s=figures["total_s"],
        wait_s=figures["stages"]["wait"],
        wall_s=done.wall_s,
        peak_rss_mb=done.peak_rss_mb,
        children_peak_rss_mb=done.children_peak_rss_mb,
        cpu_s=done.cpu_s,
        note=f"{figures['answered']} answered",
    )


def run_job(
    url: str, data: Path, work: Path, rows: int, batch_size: int, env: dict[str, str]
) -> RunFigures:
    """``flows.cli run configs/scale.yaml`` in a temporary project, in a subprocess."""
    project = work / "project"
    (project / "configs").mkdir(parents=True)
    (project / "data").mkdir()
    (project / "pyproject.toml").write_text("")
    (project / "data" / "reviews.parquet").symlink_to(data)
    config = CONFIG.format(url=url, batch_size=batch_size)
    (project / "configs" / "scale.yaml").write_text(config)
    command = [sys.executable, "-m", "flows.cli", "run", "configs/scale.yaml"]
    done = run_measured(command, project, env, work / "job.log")
    if done.returncode != 0:
        raise BenchFailed(f"the job failed ({done.returncode}):\n{done.output[-3000:]}")
    out = project / "data" / "output" / "scale.parquet"
    status = pq.read_table(out, columns=["status"])["status"]
    counts = {d["values"]: d["counts"] for d in pc.value_counts(status).to_pylist()}
    if counts.get("completed") != rows:
        raise BenchFailed(f"the job's output has statuses {counts}, expected {rows} completed")
    report_path = Path(str(out) + ".report.json")
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    timings = report.get("timings")
    figures = RunFigures(
        name="tablebatch",
        wall_s=done.wall_s,
        peak_rss_mb=done.peak_rss_mb,
        children_peak_rss_mb=done.children_peak_rss_mb,
        cpu_s=done.cpu_s,
        note=f"{counts.get('completed', 0)} completed",
    )
    if isinstance(timings, dict):
        figures.stages = {k: float(v) for k, v in timings.items() if k != "total"}
        figures.total_s = float(timings["total"]) if "total" in timings else None
        figures.wait_s = float(timings["wait"]) if "wait" in timings else None
    else:
        figures.note += "; the report has no timings yet"
    return figures


def server_spans(url: str) -> dict[str, float]:
    """Seconds from the first start to the last completion of each run's batches (±1 s)."""
    spans: dict[str, list[datetime]] = {}
    with httpx.Client(base_url=url, timeout=60.0, trust_env=False) as client:
        params: dict[str, Any] = {"limit": 100}
        while True:
            page = client.get("/batches", params=params).json()
            for b in page["data"]:
                if not (b.get("started_at") and b.get("completed_at")):
                    continue
                run = "floor" if b["name"].startswith("floor-") else "tablebatch"
                times = spans.setdefault(run, [])
                times += [datetime.fromisoformat(b["started_at"])]
                times += [datetime.fromisoformat(b["completed_at"])]
            if not page["has_more"] or not page["data"]:
                break
            params = {"limit": 100, "after": page["data"][-1]["id"]}
    return {run: (max(t) - min(t)).total_seconds() for run, t in spans.items()}


# -- the table ----------------------------------------------------------------------------


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or not b else f"{a / b:.2f}x"


def print_table(rows: int, batch_size: int, floor: RunFigures, job: RunFigures) -> None:
    """The figures side by side, and the ratios."""
    batches = math.ceil(rows / batch_size)
    adds = sum(
        math.ceil(min(batch_size, rows - start) / CALL_SIZE) for start in range(0, rows, batch_size)
    )
    pages = sum(
        math.ceil(min(batch_size, rows - start) / BATCH_SIZE)
        for start in range(0, rows, batch_size)
    )
    minimum = adds + 2 * batches + pages
    print()
    print(f"classification job, {rows} rows, batches of {batch_size} ({batches} batches)")
    print(f"  {'':<22}{'floor':>12}{'tablebatch':>12}{'ratio':>9}")
    for floor_stage, job_stage in STAGE_PAIRS:
        a, b = floor.stages.get(floor_stage), job.stages.get(job_stage)
        label = floor_stage if floor_stage == job_stage else f"{floor_stage}/{job_stage}"
        print(f"  {label + ' s':<22}{_s(a):>12}{_s(b):>12}{_ratio(b, a):>9}")
    known = {j for _, j in STAGE_PAIRS}
    for stage, seconds in job.stages.items():
        if stage not in known:  # e.g. the report's own "client"
            print(f"  {stage + ' s (report)':<22}{'-':>12}{_s(seconds):>12}")
    print(f"  {'total s':<22}{_s(floor.total_s):>12}{_s(job.total_s):>12}")
    flag = " *" if job.overlapping and "client" not in job.stages else ""
    print(
        f"  {'client s (no waiting)':<22}{_s(floor.client_s):>12}{_s(job.client_s):>12}"
        f"{_ratio(job.client_s, floor.client_s):>9}{flag}"
    )
    print(
        f"  {'CPU s (user+sys)':<22}{floor.cpu_s:>12.3f}{job.cpu_s:>12.3f}"
        f"{_ratio(job.cpu_s, floor.cpu_s):>9}"
    )
    print(
        f"  {'process wall s':<22}{floor.wall_s:>12.3f}{job.wall_s:>12.3f}"
        f"{_ratio(job.wall_s, floor.wall_s):>9}"
    )
    print(
        f"  {'rows/s end to end':<22}{rows / floor.wall_s:>12,.0f}{rows / job.wall_s:>12,.0f}"
        f"{_ratio(floor.wall_s, job.wall_s):>9}"
    )
    print(
        f"  {'peak RSS MiB':<22}{floor.peak_rss_mb:>12.1f}{job.peak_rss_mb:>12.1f}"
        f"{_ratio(job.peak_rss_mb, floor.peak_rss_mb):>9}"
    )
    if floor.children_peak_rss_mb or job.children_peak_rss_mb:
        print(
            f"  {'  child process MiB':<22}{floor.children_peak_rss_mb:>12.1f}"
            f"{job.children_peak_rss_mb:>12.1f}"
        )
    print(
        f"  {'HTTP calls':<22}{floor.http_calls:>12}{job.http_calls:>12}"
        f"{_ratio(job.http_calls, floor.http_calls):>9}"
    )
    print(
        f"  minimum HTTP calls: {adds} adds + {batches} creates + {batches} starts + "
        f"{pages} result pages = {minimum}, + polls (>= {batches}) = {minimum + batches}"
    )
    print(f"  floor: {floor.note}; tablebatch: {job.note}")
    print("  (process wall and CPU include interpreter start-up and imports; rows/s uses the wall)")
    if flag:
        print(
            "  * tablebatch's stages add up to more than its total (its shards are submitted,"
            " awaited\n    and collected at the same time), so total - wait is not its client"
            " time: see CPU s"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--rows", type=int, default=100_000, help="N reviews (default 100000)")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="requests per batch")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder, and say where")
    args = p.parse_args(argv)
    if args.rows < 1 or args.batch_size < 1:
        p.error("--rows and --batch-size must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the floor, then the job, against one server; print the table."""
    args = parse_args(argv)
    rows: int = args.rows
    data = dataset(rows)
    work = Path(tempfile.mkdtemp(prefix="tablebatch-scale-"))
    prefect_home = work / "prefect-home"
    prefect_home.mkdir()
    env = {
        **os.environ,
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    env.pop("PREFECT_API_URL", None)
    env.pop("PREFECT_API_KEY", None)
    server: subprocess.Popen[str] | None = None
    prefect: subprocess.Popen[bytes] | None = None
    try:
        prefect, prefect_url = start_prefect_server(prefect_home, env)
        print(f"prefect server: {prefect_url} (pid {prefect.pid})", flush=True)
        server, log = start_batch_server(work / "server.db")
        assert log.url is not None
        print(f"batch server: {log.url} (pid {server.pid})", flush=True)

        before = log.count()
        floor = run_floor(log.url, data, work, args.batch_size, env)
        after_floor = log.count()
        floor.http_calls = after_floor - before
        print(f"floor: done in {floor.wall_s:.2f} s", flush=True)

        job_env = {**env, "BENCH_KEY": "x", "PREFECT_API_URL": prefect_url}
        job = run_job(log.url, data, work, rows, args.batch_size, job_env)
        job.http_calls = log.count() - after_floor
        print(f"tablebatch: done in {job.wall_s:.2f} s", flush=True)

        print_table(rows, args.batch_size, floor, job)
        try:
            spans = server_spans(log.url)
            shown = ", ".join(f"{k} {v:.0f} s" for k, v in sorted(spans.items()))
            print(f"  server processing, first start to last completion (±1 s): {shown}")
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            print(f"  server processing: not available ({exc})")
    except (BenchFailed, subprocess.CalledProcessError) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        stop(server)
        stop(prefect, group=True)
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
