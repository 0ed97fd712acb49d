"""Errors of a job, each with a message that says what to change.

    JobError
    ├── ConfigError      the config cannot be used (names the file and the key)
    ├── DataError        the table cannot be used (names the file, column or rows)
    └── JobFailed        the run could not finish (a batch timed out, a systemic failure)

API errors (``tablebatch.api.errors``) pass through unchanged.
"""

from __future__ import annotations


class JobError(Exception):
    """Base of the errors a job reports to its user."""


class ConfigError(JobError, ValueError):
    """A config that cannot be used; the message says where and what to change."""


class DataError(JobError, ValueError):
    """Input data that cannot be used; found before anything is sent."""


class JobFailed(JobError):
    """The run could not finish; what was answered is kept."""
