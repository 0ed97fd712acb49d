"""``Kind``: the one small interface through which the pipeline asks a kind of job what it
does. The pipeline never looks past it, and never branches on ``kind``.

A kind is one module: its config (a ``JobConfig`` subclass with ``kind:
Literal[<name>]`` and its own keys), what it adds to each request body, how it
turns answers into its output columns (with their Arrow types) and a verdict per
answer (fine, or invalid with a reason; invalid answers are sent again where
``retry_invalid`` says so), whether it has a second stage (a judge that reads the
answers), and its report section (metrics as data, and their markdown). A new
kind is registered with ``@register``; nothing else changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from tablebatch.jobs.schema import CONFIGS, JobConfig

if TYPE_CHECKING:
    from tablebatch.jobs.build import Requests
    from tablebatch.jobs.join import ModelAnswers


@dataclass
class Chunk:
    """Some rows of the output, for a kind to compute its columns from."""

    rows: pa.Table  # their input rows
    answers: pa.Table  # their answer columns (``rows.OUTPUT_COLUMNS``)
    custom_ids: pa.Array
    model: str
    second: list[str | None] | None = None  # each row's answer of a second stage

    @property
    def done(self) -> pa.Array | pa.ChunkedArray:
        """Which rows were answered."""
        return pc.equal(self.answers["status"], "completed")


class SecondStage(Protocol):
    """A second batch stage that reads the first stage's answers (a judge)."""

    stage: str  # its name in batch names, e.g. "judge"
    model: str
    max_tokens: int | None  # the most completion tokens one of its answers may take

    def fingerprint(self, answered_model: str) -> str:
        """The fingerprint of its requests about ``answered_model``'s answers."""
        ...

    def requests(
        self, table: pa.Table, answers: ModelAnswers, index: int
    ) -> tuple[Requests, pa.Array]:
        """Its requests about the answers of one model (the ``index``-th), one per distinct
        request, and each row's request id (null for a row it does not ask about)."""
        ...


class Kind:
    """What one kind of job does; subclass it in a module of its own and ``@register`` it.

    Every method has a default that does nothing, so a kind says only what it adds."""

    name: ClassVar[str]
    Config: ClassVar[type[JobConfig]]
    columns: ClassVar[dict[str, pa.DataType]] = {}  # its output columns, in order
    retry_invalid: ClassVar[bool] = False  # send invalid answers again, as failed rows are

    def __init__(self, config: JobConfig) -> None:
        self.config = config

    # -- requests --------------------------------------------------------------------

    def input_keys(self) -> list[tuple[str, str]]:
        """``(config key, column)`` of the input columns it reads beyond the prompt's."""
        return []

    def placeholders(self) -> dict[str, str]:
        """The text of template placeholders it fills itself (not columns), e.g. ``{labels}``."""
        return {}

    def example_messages(self) -> list[dict[str, Any]]:
        """Chat turns sent before each row's own message (few-shot examples)."""
        return []

    def body(self) -> dict[str, Any]:
        """What it adds to every request body (after ``params``)."""
        return {}

    def stage_shape(self) -> dict[str, Any]:
        """What, beyond the prompt, shapes its second stage's requests (for fingerprints)."""
        return {}

    def second_stage(self) -> SecondStage | None:
        """Its second stage, if it has one."""
        return None

    # -- answers ---------------------------------------------------------------------

    def check_answers(self, answers: pa.Array) -> pa.Array | None:
        """Why each answer is invalid (a string), null where it is fine; None: all are."""
        return None

    def output_columns(self) -> dict[str, pa.DataType]:
        """Its output columns, in order, with their Arrow types (``columns``, unless they
        depend on its config)."""
        return dict(self.columns)

    def output(self, chunk: Chunk) -> dict[str, Any]:
        """Its output columns for these rows (arrays or lists, typed by ``output_columns``)."""
        return {}

    # -- the report ------------------------------------------------------------------

    def slim(self, chunk: pa.Table) -> dict[str, pa.Array]:
        """Small columns the report needs in place of long texts of ``chunk``."""
        return {}

    def long_columns(self) -> Sequence[str]:
        """Its output columns of long text, which the report does not keep."""
        return ()

    def report(self, table: pa.Table, output: pa.Table) -> dict[str, Any]:
        """Its section of the report: metrics as data (``output`` holds the report's
        columns of every output row)."""
        return {}

    @classmethod
    def markdown(cls, report: dict[str, Any]) -> list[str]:
        """Its section of the report, as markdown lines."""
        return []

    @classmethod
    def summary(cls, report: dict[str, Any]) -> list[str]:
        """Its lines of the run's summary on the terminal."""
        return []

    @classmethod
    def table_rows(cls, report: dict[str, Any]) -> list[dict[str, Any]] | None:
        """Rows of the report's table artifact (None: rows by status)."""
        return None


KINDS: dict[str, type[Kind]] = {}


def register(kind: type[Kind]) -> type[Kind]:
    """Make a kind known to the config loader and the pipeline (a class decorator)."""
    KINDS[kind.name] = kind
    kind.Config.kind_class = kind
    CONFIGS[kind.name] = kind.Config
    return kind


def kind_of(config: JobConfig) -> Kind:
    """The kind of a job's config."""
    return config.kind_impl
