"""Errors of a job, each with a message that says what to change.

    JobError
    ├── ConfigError      the config cannot be used (names the file and the key)
    ├── DataError        the table cannot be used (names the file, column or rows)
    ├── BudgetRefused    the run's estimate is over budget.max_cost: nothing was sent
    └── JobFailed        the run could not finish (a batch timed out, a systemic failure)
        └── JobAborted   the run was stopped: its batches were kept running
            └── JobCancelled  … or cancelled, the answered rows written

API errors (``tablebatch.api.errors``) pass through unchanged.
"""

from __future__ import annotations


class JobError(Exception):
    """Base of the errors a job reports to its user."""


class ConfigError(JobError, ValueError):
    """A config that cannot be used; the message says where and what to change."""


class DataError(JobError, ValueError):
    """Input data that cannot be used; found before anything is sent."""


class BudgetRefused(JobError):
    """The run would cost more than ``budget.max_cost`` (or its cost cannot be known), so
    nothing was sent; the message gives the estimate and how to raise the cap."""


class JobFailed(JobError):
    """The run could not finish; what was answered is kept."""


class JobAborted(JobFailed):
    """The run was stopped (Ctrl-C, a cancel in Prefect, a stop signal) before it finished;
    the message says what became of its batches and how to go on."""

    def __init__(self, message: str, *, signal: int | None = None) -> None:
        super().__init__(message)
        self.signal = signal  # the signal that stopped the run, if one did

    def __reduce__(self) -> tuple:
        return (type(self), (str(self),), dict(self.__dict__))  # picklable, as Prefect may


class JobCancelled(JobAborted):
    """The run was stopped and its batches cancelled; the output holds the answered rows
    (``report`` is its report) and marks the others ``cancelled``."""

    def __init__(
        self, message: str, report: dict | None = None, *, signal: int | None = None
    ) -> None:
        super().__init__(message, signal=signal)
        self.report = report
