"""The benchmarks' processes: the local Batch API server and a Prefect server started
for a run, and a command run to its end with its wall time, CPU time and peak RSS.

Used by ``job_scale.py``, ``incremental.py`` and ``startup.py`` (import it with the
benchmarks folder on ``sys.path``, as running a benchmark from it puts it).
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

READY_MARKER = "tablebatch server listening on "
READY_TIMEOUT_S = 60.0
PREFECT_READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
RSS_POLL_S = 0.1


class BenchFailed(Exception):
    """A step of the benchmark failed; the message says which and why."""


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
