"""Where the time of a small ``tablebatch run`` goes, with no Prefect server configured.

The sample job (``configs/review-sentiment.yaml``, 24 rows, the local server) is run
as a user runs it — ``python -m flows.cli run``, no ``PREFECT_API_URL``, a Prefect home
whose database an earlier run made (a warm machine) — first with nothing on the API
(it sends 24 requests), then again (it finds its batch and sends nothing). Each line
the process prints is stamped as it arrives, which splits a run into phases:

- first line: the process's start to its first line of output;
- Prefect up: to ``Beginning flow run`` (the temporary Prefect API, imports);
- flow: to the flow run's ``Finished in state`` (the job itself);
- exit: from there to the end of the process (the summary, flushing Prefect's
  events and logs, stopping the temporary API).

with the wall time and CPU seconds (user+sys of the process and every process below
it, one it left running to stop alone included, to that one's end; and what the
temporary Prefect API kept from an earlier run spent for it, to 2 s after its end). Each
tree is measured in a copy of itself, on its own Prefect home, ``--runs`` times (the
median is shown). The working tree is measured twice: as a run finds it within
``TABLEBATCH_PREFECT_API_IDLE_S`` of the last (the temporary API kept, "now"), and with
the API stopping with each run (``TABLEBATCH_PREFECT_API_IDLE_S=0``, "now, idle 0": the
first run of a session). ``--before REF`` measures the commit REF the same way, beside the
working tree. ``--scale N`` also runs N rows end to end, ``tablebatch run`` against the
bare program (``benchmarks/floor.py``) on one Batch API server, with no Prefect server
started beforehand (see ``benchmarks/job_scale.py``, which starts one).

Run it from the repository root, one benchmark at a time::

    flock /tmp/tablebatch-bench.lock python benchmarks/startup.py --before 40be94d
    flock /tmp/tablebatch-bench.lock python benchmarks/startup.py --scale 100000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIG = "configs/review-sentiment.yaml"
PHASES = ("first line", "Prefect up", "flow", "exit")
MARKERS = {  # phase -> the text of the line that ends it
    "Prefect up": "Beginning flow run",
    "flow": "Finished in state",
}


@dataclass
class Run:
    """One measured process: its phase ends (seconds from its start), wall and CPU."""

    ends: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    returncode: int = 0
    output: list[str] = field(default_factory=list)

    def phases(self) -> dict[str, float | None]:
        """Each phase's own seconds (None when its line was not seen)."""
        out: dict[str, float | None] = {}
        last = 0.0
        for phase in PHASES:
            end = self.wall_s if phase == "exit" else self.ends.get(phase)
            out[phase] = None if end is None else end - last
            last = end if end is not None else last
        return out


def copy_tree(ref: str | None, into: Path) -> Path:
    """The repository at ``ref`` (None: the working tree's tracked files, as they are now)."""
    into.mkdir(parents=True)
    if ref is None:
        files = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout.split(b"\0")
        for name in filter(None, files):
            source = ROOT / name.decode()
            if source.is_file():
                (into / name.decode()).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, into / name.decode())
    else:
        archive = subprocess.run(
            ["git", "archive", ref], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    shutil.rmtree(into / "data" / "output", ignore_errors=True)
    return into


def supports(tree: Path, flag: str) -> bool:
    """Whether this tree's ``run`` takes ``flag`` (an older tree may not)."""
    help_text = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "--help"],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
    ).stdout
    return flag in help_text


KEPT_STATE = "tablebatch-prefect-api.json"  # flows/prefect_kept.py: the kept API's pid
KEPT_SETTLE_S = 2.0


def kept_pid(home: Path) -> int | None:
    """The pid of the temporary Prefect API kept in ``home`` (None: none is running)."""
    try:
        pid = int(json.loads((home / KEPT_STATE).read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid if _running(pid) else None


def stop_kept(home: Path) -> None:
    """Stop the temporary Prefect API kept in ``home`` and wait for its end."""
    pid = kept_pid(home)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def run_once(tree: Path, env: dict[str, str], extra: list[str]) -> Run:
    """``python -m flows.cli run CONFIG`` in ``tree``, its lines stamped as they arrive."""
    home = Path(env["PREFECT_HOME"])
    kept_before = kept_pid(home)
    kept_cpu_before = _cpu_s(kept_before) if kept_before else 0.0
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "run", CONFIG, *extra],
        cwd=tree,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    run = Run()
    assert process.stdout is not None

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            now = time.perf_counter() - started
            run.output.append(f"{now:7.2f}  {line.rstrip()}")
            run.ends.setdefault("first line", now)
            for phase, marker in MARKERS.items():
                if marker in line and (phase != "flow" or "Flow run" in line):
                    run.ends.setdefault(phase, now)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seen: dict[int, float] = {}  # CPU seconds of the run and every process below it, last seen
    while process.poll() is None:
        for pid in [process.pid, *_descendants(process.pid)]:
            seen[pid] = max(seen.get(pid, 0.0), _cpu_s(pid))
        time.sleep(0.05)
    run.returncode = process.returncode
    run.wall_s = time.perf_counter() - started
    reader.join(5)
    kept = kept_pid(home)  # the API kept for the next run: its CPU for this run
    if kept is not None:
        time.sleep(KEPT_SETTLE_S)  # it records what the run sent a moment after its end
        if kept == kept_before:
            run.cpu_s += max(0.0, _cpu_s(kept) - kept_cpu_before)
        else:  # this run started it: it was below it
            seen[kept] = max(seen.get(kept, 0.0), _cpu_s(kept))
    # a process the run did not wait for (a server it left to stop alone): to its end
    left = {pid for pid in seen if _running(pid) and pid != kept}
    deadline = time.monotonic() + 20
    while left and time.monotonic() < deadline:
        for pid in list(left):
            seen[pid] = max(seen[pid], _cpu_s(pid))
            if not _running(pid):
                left.discard(pid)
        time.sleep(0.05)
    run.cpu_s += sum(seen.values())  # polled every 50 ms: each process's last moments are lost
    return run


def _cpu_s(pid: int) -> float:
    """User+system CPU seconds of a process, from /proc (a zombie's are its last); -1 once
    it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return -1.0


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def _descendants(pid: int) -> list[int]:
    """Every live process below ``pid``, from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def measure(
    tree: Path, home: Path, runs: int, idle: str | None = None
) -> tuple[list[Run], list[Run]]:
    """Sample runs (sending) and re-runs (sending nothing) of ``tree``, after one run that
    makes its Prefect home's database (not counted); ``idle``: its
    TABLEBATCH_PREFECT_API_IDLE_S (None: as the environment says)."""
    env = {
        **os.environ,
        **({"TABLEBATCH_PREFECT_API_IDLE_S": idle} if idle is not None else {}),
        "PYTHONPATH": str(tree),
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        # Prefect's own temporary server (an older tree's) waits 20 s for a new database
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    }
    for key in ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE"):
        env.pop(key, None)
    extra = ["--verbose"] if supports(tree, "--verbose") else []
    warm = run_once(tree, env, extra)
    if warm.returncode != 0:
        raise SystemExit(f"{tree}: the warm-up run failed:\n" + "\n".join(warm.output[-30:]))
    sends, reruns = [], []
    for _ in range(runs):
        shutil.rmtree(tree / ".tablebatch", ignore_errors=True)  # the API forgets the batch
        sends.append(run_once(tree, env, extra))
        reruns.append(run_once(tree, env, extra))
    for run in sends + reruns:
        if run.returncode != 0:
            raise SystemExit(f"{tree}: a run failed:\n" + "\n".join(run.output[-30:]))
    return sends, reruns


def _median(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    return "-" if not known else f"{statistics.median(known):.2f}"


def print_table(results: dict[str, tuple[list[Run], list[Run]]]) -> None:
    """Median seconds of each phase, per tree and kind of run."""
    columns = [(tree, kind) for tree in results for kind in ("sample", "re-run")]
    print()
    print(f"  {'median s':<14}" + "".join(f"{f'{t}: {k}':>22}" for t, k in columns))
    for phase in (*PHASES, "wall", "CPU"):
        cells = []
        for tree, kind in columns:
            runs = results[tree][0 if kind == "sample" else 1]
            if phase == "wall":
                values: list[float | None] = [r.wall_s for r in runs]
            elif phase == "CPU":
                values = [r.cpu_s for r in runs]
            else:
                values = [r.phases()[phase] for r in runs]
            cells.append(_median(values))
        print(f"  {phase:<14}" + "".join(f"{c:>22}" for c in cells))
    runs = len(next(iter(results.values()))[0])
    print(f"  ({runs} run(s) each; load average {os.getloadavg()[0]:.1f} at the end)")


def scale(rows: int, trees: dict[str, tuple[Path, Path, str | None]], work: Path) -> None:
    """N rows end to end, wall clock: the floor, then each tree's ``tablebatch run`` with
    no Prefect server started beforehand (a temporary one, on its warm Prefect home: the
    one kept from the sample runs for "now", a new one for "now, idle 0")."""
    sys.path.insert(0, str(HERE))
    import bench_procs
    import job_scale

    data = job_scale.dataset(rows)
    print()
    print(f"  {rows} rows end to end (process wall clock, no Prefect server beforehand)")
    for label, (tree, home, idle) in trees.items():
        env = {
            **os.environ,
            **({"TABLEBATCH_PREFECT_API_IDLE_S": idle} if idle is not None else {}),
            "PYTHONPATH": str(tree),
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
        }
        for key in ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE"):
            env.pop(key, None)
        here = work / f"scale-{label.replace(', ', '-').replace(' ', '-')}"
        here.mkdir(parents=True)
        server, log = bench_procs.start_batch_server(here / "server.db")
        try:
            assert log.url is not None
            size = job_scale.BATCH_SIZE
            floor = job_scale.run_floor(log.url, data, here, size, env)
            job = job_scale.run_job(log.url, data, here, rows, size, {**env, "BENCH_KEY": "x"})
        finally:
            bench_procs.stop(server)
        print(
            f"  {label:<11} floor {floor.wall_s:6.2f} s (CPU {floor.cpu_s:6.2f} s)   tablebatch "
            f"{job.wall_s:6.2f} s (CPU {job.cpu_s:6.2f} s)   {job.wall_s / floor.wall_s:.2f}x "
            "the floor",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    """Measure the working tree (and ``--before REF``); print the phases."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--runs", type=int, default=3, help="measured runs of each kind (default 3)")
    p.add_argument("--before", metavar="REF", help="also measure this commit, e.g. 40be94d")
    p.add_argument("--scale", type=int, metavar="N", help="also run N rows against the floor")
    p.add_argument("--show", action="store_true", help="print each run's stamped output")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="tablebatch-startup-"))
    try:
        results: dict[str, tuple[list[Run], list[Run]]] = {}
        trees: dict[str, tuple[Path, Path, str | None]] = {}
        refs = [("before", args.before, None)] if args.before else []
        now = [("now", None, None), ("now, idle 0", None, "0")]
        for label, ref, idle in [*refs, *now]:
            tree = work / "now" if label.startswith("now") else work / label
            if not tree.exists():
                copy_tree(ref, tree)
            home = work / f"prefect-{label.replace(', ', '-').replace(' ', '-')}"
            trees[label] = (tree, home, idle)
            print(f"{label}: {ref or 'the working tree'} in {tree}", flush=True)
            results[label] = measure(tree, home, args.runs, idle)
            if args.show:
                for run in results[label][0][:1] + results[label][1][:1]:
                    print("\n".join(run.output) + "\n")
        print_table(results)
        if args.scale:
            scale(args.scale, trees, work)
    finally:
        for _, home, _ in trees.values():
            stop_kept(home)  # a kept temporary API outlives its runs: not this benchmark
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
