"""The HTML around the charts: one self-contained page (inline CSS, inline SVG, no script,
no font or image from anywhere), its figures, tables and sections.

Every figure carries ``data-figure`` (its key) and every chart ``data-chart``, so a test
(or a reader's script) finds them on the rendered page.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

CSS = """
body{font-family:'DejaVu Sans','Liberation Sans',system-ui,sans-serif;margin:0;color:#1b1f24;
background:#f6f7f9}
header{background:#1f3a5f;color:#fff;padding:18px 28px}
header h1{margin:0 0 4px;font-size:22px} header p{margin:0;opacity:.85}
main{padding:8px 28px 40px;max-width:1200px}
section{background:#fff;border:1px solid #dde1e6;border-radius:8px;margin:18px 0;padding:14px 18px}
section h2{font-size:17px;margin:0 0 10px}
.figures{display:flex;flex-wrap:wrap;gap:10px;margin:6px 0}
.figure{border:1px solid #dde1e6;border-radius:6px;padding:8px 12px;min-width:110px}
.figure .value{display:block;font-size:20px;font-weight:600}
.figure .label{display:block;font-size:12px;color:#57606a}
.charts{display:flex;flex-wrap:wrap;gap:18px}
figure.chart{margin:0} figcaption{font-weight:600;font-size:13px;margin-bottom:4px}
.note{font-weight:400;color:#57606a}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}
th,td{border:1px solid #dde1e6;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f2f5} td.num{text-align:right;font-variant-numeric:tabular-nums}
td .cell{max-width:480px;max-height:6em;overflow:auto;white-space:pre-wrap}
.pos{color:#1a7f37} .neg{color:#cf222e} p.muted{color:#57606a;font-size:13px}
"""


@dataclass
class Figure:
    """A headline number: its key (``data-figure``), label and shown value."""

    key: str
    label: str
    value: str


@dataclass
class Section:
    """A part of the page: a title, figures, then HTML blocks (charts, tables, notes)."""

    key: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)


def pct(x: float | None) -> str:
    """A fraction as a percentage, as the markdown report shows it."""
    return "–" if x is None else f"{100 * x:.1f}%"


def num(x: float | None, digits: int = 3) -> str:
    """A number with a few decimals ("–" for none)."""
    return "–" if x is None else f"{x:.{digits}f}"


def count(n: int | None) -> str:
    """A whole number with thousands separators."""
    return "–" if n is None else f"{n:,}"


def figures_html(figures: Sequence[Figure]) -> str:
    """A row of headline figures."""
    items = "".join(
        f'<div class="figure" data-figure="{html.escape(f.key)}">'
        f'<span class="value">{html.escape(f.value)}</span>'
        f'<span class="label">{html.escape(f.label)}</span></div>'
        for f in figures
    )
    return f'<div class="figures">{items}</div>'


def _cell(value: Any, limit: int) -> str:
    if value is None:
        return '<td class="muted">–</td>'
    if isinstance(value, int | float) and not isinstance(value, bool):
        shown = f"{value:,}" if isinstance(value, int) else f"{value:.3f}"
        return f'<td class="num">{shown}</td>'
    text = ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f'<td><div class="cell">{html.escape(text)}</div></td>'


def table_html(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], key: str = "", limit: int = 400
) -> str:
    """An HTML table (texts escaped and cut at ``limit`` characters)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(v, limit) for v in row) + "</tr>" for row in rows)
    attr = f' data-table="{html.escape(key)}"' if key else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def note(text: str) -> str:
    """A short grey paragraph."""
    return f'<p class="muted">{html.escape(text)}</p>'


def row(*blocks: str) -> str:
    """Charts side by side (wrapping)."""
    return '<div class="charts">' + "".join(b for b in blocks if b) + "</div>"


def section_html(section: Section) -> str:
    """One section."""
    figures = figures_html(section.figures) if section.figures else ""
    return (
        f'<section data-section="{html.escape(section.key)}">'
        f"<h2>{html.escape(section.title)}</h2>{figures}{''.join(section.blocks)}</section>"
    )


def page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The whole page: no script, no external resource."""
    body = "".join(section_html(s) for s in sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p></header>"
        f"<main>{body}</main></body></html>\n"
    )
