"""A run's HTML report (``<output>.report.html``) and the chart for its Prefect artifact,
built from the report JSON and the output table alone (no API call)."""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path
from typing import Any

from tablebatch.report import charts
from tablebatch.report.common import common_sections, header_figures, status_chart, when
from tablebatch.report.kinds import kind_report
from tablebatch.report.page import figures_html, note, page
from tablebatch.report.run import Run


def subtitle(run: Run) -> str:
    """The line under the title: kind, models, when, output."""
    models = ", ".join(run.report.get("models", []))
    return f"{run.kind} · {models} · {when(run)} · {run.output.path}"


def render(run: Run) -> str:
    """The run's report page."""
    kind = kind_report(run.kind)
    resolved = tuple(run.columns.get(e, e) if e in ("gold", "reference") else e for e in kind.extra_columns)
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
    os.replace(tmp, path)
    return path


def main_chart_png(run: Run) -> bytes:
    """The kind's main chart (the status chart when it has none) as PNG."""
    chart = kind_report(run.kind).main_chart(run) or status_chart(run.report)
    return charts.png(chart)


def artifact_markdown(run: Run, html_path: Path | None) -> str:
    """Markdown for the Prefect UI: the headline figures and the main chart as an inline
    PNG (a data URI: the UI shows it with no file server), and where the full report is."""
    figures = [*header_figures(run.report), *kind_report(run.kind).figures(run.report)]
    image = base64.b64encode(main_chart_png(run)).decode()
    lines = [
        f"# {run.report['job']} ({run.kind})",
        "",
        "| " + " | ".join(f.label for f in figures) + " |",
        "|" + "---|" * len(figures),
        "| " + " | ".join(f.value for f in figures) + " |",
        "",
        f"![main chart](data:image/png;base64,{image})",
    ]
    if html_path is not None:
        lines += ["", f"Full report: `{html_path}` (`tablebatch report {run.output.path} --open`)"]
    return "\n".join(lines) + "\n"


__all__ = ["artifact_markdown", "figures_html", "main_chart_png", "note", "render", "write_html"]
