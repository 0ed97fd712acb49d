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
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import httpx
import pyarrow.compute as pc
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
CACHE_DIR = Path("/tmp/tablebatch-bench")
READY_MARKER = "tablebatch server listening on "
READY_TIMEOUT_S = 60.0
PREFECT_READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
RSS_POLL_S = 0.1
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


class BenchFailed(Exception):
    """A step of the benchmark failed; the message says which and why."""


# -- processes ----------------------------------------------------------------------------


class AccessLog:
    """Reads the server's output to its end: finds its URL and counts its HTTP calls."""

    def __init__(self, stream: IO[str]) -> None:
        self.url: str | None = None
        self.calls = 0
        self.tail: list[str] = []
        self.ready = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            if self.url is None and READY_MARKER in line:
                self.url = line.split(READY_MARKER, 1)[1].split()[0]
                self.ready.set()
            elif '"GET ' in line or '"POST ' in line:
                with self._lock:
                    self.calls += 1
            else:
                self.tail = [*self.tail[-40:], line]
        self.ready.set()

    def count(self, settle_s: float = 0.5) -> int:
        """The calls logged so far, once the log has been quiet for a moment."""
        last = -1
        while last != self.calls:
            last = self.calls
            time.sleep(settle_s)
        return last


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(process: subprocess.Popen[Any] | None, group: bool = False) -> None:
    """SIGINT (to its process group if it leads one), then wait; kill if it lingers."""
    if process is None or process.poll() is not None:
        return

    def send(sig: int) -> None:
        try:
            if group:
                os.killpg(process.pid, sig)
            else:
                process.send_signal(sig)
        except ProcessLookupError:
            pass

    send(signal.SIGINT)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait(STOP_TIMEOUT_S)


def start_batch_server(db: Path) -> tuple[subprocess.Popen[str], AccessLog]:
    """``tablebatch server`` on a free port, logging every call; its process and log."""
    command = [sys.executable, "-m", "flows.cli", "server", "--port", "0", "--db", str(db)]
    process = subprocess.Popen(
        [*command, "--no-auth", "--access-log"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        bufsize=1,
    )
    assert process.stdout is not None
    log = AccessLog(process.stdout)
    if not log.ready.wait(READY_TIMEOUT_S) or log.url is None:
        stop(process)
        raise BenchFailed("the Batch API server did not start:\n" + "".join(log.tail))
    return process, log


def start_prefect_server(home: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """``prefect server start`` on a free port; its process and API URL, once healthy."""
    port = free_port()
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
    log_path = home / "prefect-server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # its own process group: stopped with all it starts
        )
    api_url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + PREFECT_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if httpx.get(f"{api_url}/health", timeout=2.0, trust_env=False).status_code == 200:
                return process, api_url
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    stop(process, group=True)
    raise BenchFailed("the Prefect server did not become healthy:\n" + log_path.read_text()[-3000:])


@dataclass
class Finished:
    """A process run to its end: exit code, wall time, peak RSS, output."""

    returncode: int
    wall_s: float
    peak_rss_mb: float
    children_peak_rss_mb: float
    cpu_s: float
    output: str


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(b")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _vm_hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_measured(command: list[str], cwd: Path, env: dict[str, str], log_path: Path) -> Finished:
    """Run ``command`` to its end, polling the peak RSS of it and of its children."""
    started = time.perf_counter()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    peaks: dict[int, int] = {}
    try:
        while process.poll() is None:
            for pid in [process.pid, *_descendants(process.pid)]:
                peaks[pid] = max(peaks.get(pid, 0), _vm_hwm_kb(pid))
            time.sleep(RSS_POLL_S)
    finally:
        stop(process)
    wall = time.perf_counter() - started
    # CPU of the processes reaped meanwhile: this one (and its reaped children), no other
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    children = [kb for pid, kb in peaks.items() if pid != process.pid]
    return Finished(
        returncode=process.returncode,
        wall_s=wall,
        peak_rss_mb=peaks.get(process.pid, 0) / 1024,
        children_peak_rss_mb=max(children, default=0) / 1024,
        cpu_s=cpu,
        output=log_path.read_text(errors="replace"),
    )


# -- the benchmark ------------------------------------------------------------------------


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
