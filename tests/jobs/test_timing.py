"""Client time: the run's wall time less the spans in which it only waited."""

from __future__ import annotations

import pytest

from tablebatch.jobs.timing import Timings


def test_client_time_leaves_out_only_the_pure_waiting() -> None:
    timing = Timings()  # one run's spans (no process-wide dict keyed by a run)
    timing.add("build", 0.0, 1.0)
    timing.add("wait", 1.0, 5.0)  # waits 1-5 and 2-7 overlap
    timing.add("wait", 2.0, 7.0)
    timing.add("collect", 4.0, 6.0)  # work while waiting: not waiting only
    timing.add("write", 7.0, 8.0)
    out = timing.take(total=8.5)
    assert out["wait"] == pytest.approx(9.0) and out["build"] == pytest.approx(1.0)
    assert out["waiting_only"] == pytest.approx(4.0)  # 1-4 and 6-7
    assert out["client"] == pytest.approx(4.5)
    assert timing.take(total=1.0)["client"] == pytest.approx(1.0)  # forgotten
