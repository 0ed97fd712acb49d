"""Crash points: where a test may kill a job's process, to prove that a re-run loses nothing.

Set ``TABLEBATCH_CRASH_AT`` to one of ``POINTS`` and the process sends itself
SIGKILL when it gets there: no cleanup, no flush, as a power cut or an OOM
kill would leave it. Unset (always, outside resilience tests), this costs one
dictionary lookup.
"""

from __future__ import annotations

import os
import signal

POINTS = (
    "after-create",  # the first batch exists, no request added yet
    "mid-add",  # some requests added, others not
    "polling",  # the batch is processing
    "collecting",  # part of the results read
    "writing",  # the output's temporary file written, not yet renamed
)
# Reached only with providers that create a batch in one call (OpenAI, Anthropic): the
# provider has the batch, and this process has not recorded it (its id, in Anthropic's
# ledger). The seed's API never gets there, so these are not in POINTS.
ONE_CALL_POINTS = ("created-unrecorded",)


def crash_point(name: str) -> None:
    """Die here, at once, if ``TABLEBATCH_CRASH_AT`` names this point."""
    if os.environ.get("TABLEBATCH_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
