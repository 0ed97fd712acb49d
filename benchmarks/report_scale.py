"""The HTML report of a large run: ``tablebatch report OUTPUT`` and ``tablebatch compare``
on the classification scale output, and on extraction and generation outputs of as many
rows (``benchmarks/make_outputs.py``), wall time and peak RSS of each.

The output is the one ``benchmarks/job_scale.py`` writes (1,000,000 synthetic reviews of
``benchmarks/make_reviews.py``, classified by the offline backend). It is cached in
/tmp/tablebatch-bench/report-<rows>/; when it is missing, this script runs
``job_scale.py --rows N --keep`` once (minutes) and copies the output and its report JSON.

Each command runs in its own process (``python -m flows.cli``), so the figures include the
interpreter's start-up and imports, as a user sees them. Run it from the repository root::

    flock /tmp/tablebatch-bench.lock .venv/bin/python benchmarks/report_scale.py --rows 1000000
"""

from __future__ import annotations

import argparse
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks import make_outputs  # noqa: E402

CACHE = Path("/tmp/tablebatch-bench")


def scale_output(rows: int) -> Path:
    """The scale job's output for ``rows`` rows, made (once) by job_scale.py when missing."""
    folder = CACHE / f"report-{rows}"
    output = folder / "scale.parquet"
    if output.exists() and Path(str(output) + ".report.json").exists():
        return output
    print(f"no cached output in {folder}: running job_scale.py --rows {rows} --keep", flush=True)
    run = subprocess.run(
        [sys.executable, str(HERE / "job_scale.py"), "--rows", str(rows), "--keep"],
        capture_output=True,
        text=True,
        check=True,
    )
    kept = re.search(r"^kept (.+)$", run.stdout, re.MULTILINE)
    assert kept, run.stdout[-2000:]
    made = Path(kept.group(1)) / "project/data/output/scale.parquet"
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in ("", ".report.json"):
        shutil.copy(str(made) + suffix, str(output) + suffix)
    shutil.rmtree(kept.group(1), ignore_errors=True)
    return output


WRAPPER = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
    "capture_output=True); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def measure(args: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (MiB) of one command in its own process (run
    under a wrapper process of its own, so that its peak is not another command's)."""
    command = [sys.executable, "-m", "flows.cli", *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", WRAPPER, *command], check=True, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, int(done.stdout.strip()) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--output", type=Path, help="an output table with its report JSON")
    parser.add_argument(
        "--kinds",
        default="classification,extraction,generation",
        help="classification: the scale job's output; extraction, generation: outputs of as "
        "many rows made from its reviews (benchmarks/make_outputs.py)",
    )
    args = parser.parse_args()
    output = args.output or scale_output(args.rows)
    html = Path(str(output) + ".report.html")
    page = output.parent / "compare.html"
    size = output.stat().st_size / 2**20
    print(f"output: {output} ({size:.1f} MiB)")
    print(f"  {'command':<44}{'wall s':>8}{'CPU s':>8}{'peak RSS MiB':>14}")
    for kind in args.kinds.split(","):
        if kind == "classification":
            table = output
        else:  # made from the scale output's reviews (cached beside it)
            table = make_outputs.make(kind, output, output.parent)
            html = Path(str(table) + ".report.html")
            page = table.parent / f"compare-{kind}.html"
        runs = [
            (f"{kind}: tablebatch report OUTPUT", ["report", str(table)]),
            (
                f"{kind}: tablebatch compare OUTPUT OUTPUT",
                ["compare", str(table), str(table), "--out", str(page)],
            ),
        ]
        for name, command in runs:
            wall, cpu, rss = measure(command)
            print(f"  {name:<44}{wall:>8.2f}{cpu:>8.2f}{rss:>14.0f}", flush=True)
        print(f"  report page: {html} ({html.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
