"""Helper processes of the backends: started so that signals stay the server's.

A terminal's Ctrl-C and a Prefect runner's SIGTERM go to the whole process group;
a helper must neither die of them while it starts nor outlive a server that was
killed. ``stop_signals_blocked`` is held while helpers are started (they inherit
the mask), and ``init_helper`` is every helper's initializer.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def usable_cores() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """Block Ctrl-C and stop signals in this thread while it may start helpers: they
    inherit the mask, so a signal to the process group (a terminal's Ctrl-C, a Prefect
    runner's SIGTERM) cannot kill one while it starts up."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def init_helper(parent: int) -> None:
    """Set up a helper process: Ctrl-C and stop signals are the server's to handle (a
    terminal and a Prefect runner signal the whole process group, so the helper leaves
    it), and the helper ends when the server does, even when it was killed and could not
    say so."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(os, "setpgrp"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # drops one sent to the group meanwhile
        os.setpgrp()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the pool may still terminate it
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="tablebatch-parent-watch", daemon=True).start()
