"""A run's HTML report (``<output>.report.html``) and the chart for its Prefect artifact,
built from the report JSON and the output table alone (no API call)."""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path
from typing import Any

from tablebatch.report import charts
from tablebatch.report.common import (
    common_sections,
    header_figures,
    shown_path,
    status_chart,
    when,
)
from tablebatch.report.kinds import kind_report
from tablebatch.report.page import page
from tablebatch.report.run import Run


def subtitle(run: Run) -> str:
    """The line under the title: kind, models, when, output."""
    models = ", ".join(run.report.get("models", []))
    return f"{run.kind} · {models} · {when(run)} · {shown_path(run.output.path)}"


def render(run: Run) -> str:
    """The run's report page."""
    kind = kind_report(run.kind)
    resolved = tuple(
        run.columns.get(e, e) if e in ("gold", "reference") else e for e in kind.extra_columns
    )
    extra = tuple(c for c in resolved if c)
    overview, tail = common_sections(run, extra)
    sections = [overview, *kind.sections(run), *tail]
    return page(f"{run.report['job']} — report", subtitle(run), sections)


def write_html(report: dict[str, Any], output: str | Path) -> Path:
    """Write the report page next to the output (atomically); returns its path."""
    run = Run.of(report, output)
    path = Path(str(output) + ".report.html")
    text = render(run)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # as a plain file would be: mkstemp's is private
    os.replace(tmp, path)
    return path


def main_chart_png(run: Run) -> bytes:
    """The kind's main chart (the status chart when it has none) as PNG."""
    chart = kind_report(run.kind).main_chart(run) or status_chart(run.report)
    return charts.png(chart)


def artifact(run: Run, html_path: Path | None) -> tuple[str, str]:
    """The Prefect artifact of the charts: its markdown and its one-line description.

    Measured in the Prefect UI (3.x, offline): the run page's Artifacts tab shows a card per
    artifact with its description as text (an image there is not shown), and the artifact's
    page renders the markdown, a PNG given as a data URI included. So the description holds
    the headline figures and the markdown the figures and the main chart."""
    kind = kind_report(run.kind)
    figures = [*kind.figures(run.report), *header_figures(run.report)]
    image = base64.b64encode(main_chart_png(run)).decode()
    lines = [
        f"# {run.report['job']} ({run.kind})",
        "",
        f"![main chart](data:image/png;base64,{image})",
        "",
        "| figure | value |",
        "|---|---|",
        *[f"| {f.label} | {f.value} |" for f in figures],
    ]
    if html_path is not None:
        again = f"tablebatch report {run.output.path} --open"
        lines += ["", f"The whole report: `{html_path}`", "", f"Open it: `{again}`"]
    headline = kind.figures(run.report)[:3] or header_figures(run.report)[:3]
    description = " · ".join(f"{f.label} {f.value}" for f in headline)
    return "\n".join(lines) + "\n", description
