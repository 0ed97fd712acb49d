"""A finished run as the report sees it: its report JSON, its output table, and which output
columns play which part (id, prompt inputs, gold, reference).

The parts are written into the report JSON (``columns``) when the run ends, so a report can
be built again from the output alone; an older JSON without them gets a best guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from tablebatch.jobs.kinds import KINDS
from tablebatch.jobs.rows import OUTPUT_COLUMNS as ROW_COLUMNS
from tablebatch.report.table import OutputTable, ReportInputError

# the columns every output has, and the kinds' own (everything else is an input column)
OUTPUT_COLUMNS = set(ROW_COLUMNS).union(*(kind.columns for kind in KINDS.values()))


REQUIRED = ["job", "kind", "rows_by_status", "output_rows"]  # keys every report JSON has


def output_name(column: str | None, output_columns: set[str] = OUTPUT_COLUMNS) -> str | None:
    """The name an input column has in the output (``<name>_input`` where it collides)."""
    if not column:
        return None
    return f"{column}_input" if column in output_columns else column


def columns_of(config: Any) -> dict[str, Any]:
    """The parts the output's columns play, from a job config (a ``JobConfig``): names as
    they are in the output."""
    from tablebatch.jobs.config import template_fields
    from tablebatch.jobs.kinds import kind_of

    filled = kind_of(config).placeholders()  # {labels}, {schema}: the kind's, not columns
    fields = [c for c in template_fields(config.prompt.template) if c not in filled]
    inputs = [output_name(c) for c in fields]
    return {
        "id": output_name(config.input.id_column),
        "inputs": list(dict.fromkeys(c for c in inputs if c)),
        "gold": output_name(config.gold_column),
        "reference": output_name(config.reference_column),
        "invalid_label": config.invalid_label if config.kind == "classification" else None,
    }


def _guess_columns(report: dict[str, Any], names: list[str]) -> dict[str, Any]:
    inputs = [n for n in names if n not in OUTPUT_COLUMNS]
    gold = (report.get("gold") or {}).get("gold_column")
    return {
        "id": inputs[0] if inputs else None,
        "inputs": inputs[1:] or inputs,
        "gold": output_name(gold),
        "reference": None,
    }


@dataclass
class Run:
    """One run: the report JSON, its output table, and the columns' parts."""

    report: dict[str, Any]
    output: OutputTable
    columns: dict[str, Any]
    name: str = ""  # how a compare page calls it

    @property
    def kind(self) -> str:
        """The job's kind."""
        return str(self.report["kind"])

    @classmethod
    def load(cls, output: str | Path, name: str = "") -> Run:
        """The run whose output table is at ``output`` (its report JSON beside it)."""
        output = str(output)
        json_path = Path(output + ".report.json")
        if not Path(output).exists():
            raise ReportInputError(f"{output}: no such output table; run the job first")
        if not json_path.exists():
            raise ReportInputError(
                f"{json_path}: no report JSON beside the output; a report is built from the "
                "output table and the JSON its run wrote (run the job to write both)"
            )
        try:
            report = orjson.loads(json_path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise ReportInputError(f"{json_path}: not valid JSON ({exc})") from exc
        missing = [k for k in REQUIRED if k not in report] if isinstance(report, dict) else REQUIRED
        if missing:
            raise ReportInputError(
                f"{json_path}: not a tablebatch report (no {', '.join(missing)}); it is the "
                "JSON a run writes beside its output"
            )
        return cls.of(report, output, name)

    @classmethod
    def of(cls, report: dict[str, Any], output: str | Path, name: str = "") -> Run:
        """A run from its report dict and the path of its output table."""
        table = OutputTable.open(output, report.get("output_rows"))
        columns = report.get("columns") or _guess_columns(report, table.names)
        return cls(report, table, columns, name or report.get("job", Path(output).stem))
