"""Charts: Altair (Vega-Lite) specs rendered by vl-convert to inline SVG for the HTML page
and to PNG for Prefect artifacts, with no JavaScript and no network.

Altair because a chart is a declarative spec (data + encodings) that is easy to test and to
render headless; vl-convert bundles the Vega engine in a wheel, so rendering needs neither a
browser nor Node. Charts get aggregated or sampled data only, so a spec stays small.
"""

from __future__ import annotations

import html
import re
from typing import Any

import altair as alt
import numpy as np
import vl_convert

WIDTH = 420
HEIGHT = 220
FONT = "DejaVu Sans, Liberation Sans, sans-serif"  # in vl-convert and in browsers alike
SCALE = 2  # PNG pixels per SVG pixel: sharp on high-density screens

alt.data_transformers.disable_max_rows()  # the data handed to a chart is already small


def spec(chart: alt.TopLevelMixin) -> dict[str, Any]:
    """The Vega-Lite spec of a chart, with the page's look."""
    out = chart.to_dict()
    out.setdefault("config", {}).update(
        {
            "font": FONT,
            "axisX": {"labelAngle": 0, "labelLimit": 120},
            "legend": {"labelLimit": 200},
            "view": {"stroke": None},
            "axis": {"labelFontSize": 11, "titleFontSize": 12},
        }
    )
    return out


def svg(chart: alt.TopLevelMixin) -> str:
    """The chart as an SVG element (no XML prologue), to inline in HTML."""
    text = vl_convert.vegalite_to_svg(spec(chart))
    return re.sub(r"^<\?xml[^>]*>\s*", "", text)


def png(chart: alt.TopLevelMixin, scale: float = SCALE) -> bytes:
    """The chart as a PNG image."""
    return bytes(vl_convert.vegalite_to_png(spec(chart), scale=scale))


def figure(chart: alt.TopLevelMixin, key: str, title: str, note: str = "") -> str:
    """A chart as an HTML ``<figure>`` with its title and an optional note (e.g. that it
    shows a sample of the rows)."""
    caption = html.escape(title) + (
        f' <span class="note">{html.escape(note)}</span>' if note else ""
    )
    return (
        f'<figure class="chart" data-chart="{html.escape(key)}">'
        f"<figcaption>{caption}</figcaption>{svg(chart)}</figure>"
    )


def bars(
    data: list[dict[str, Any]],
    x: str,
    y: str,
    *,
    color: str | None = None,
    column: str | None = None,
    title_x: str | None = None,
    title_y: str | None = None,
    sort: list[str] | None = None,
    domain: tuple[float, float] | None = None,
    label_angle: int = 0,
) -> alt.Chart:
    """Vertical bars of ``y`` per ``x`` (grouped by ``color`` side by side when given;
    ``label_angle`` tilts the ``x`` labels, for long names)."""
    scale = alt.Scale(domain=list(domain)) if domain else alt.Undefined
    axis = alt.Axis(labelAngle=label_angle) if label_angle else alt.Undefined
    enc: dict[str, Any] = {
        "x": alt.X(f"{x}:N", sort=sort or alt.Undefined, title=title_x or x, axis=axis),
        "y": alt.Y(f"{y}:Q", title=title_y or y, scale=scale),
        "tooltip": [f"{x}:N", f"{y}:Q", *([f"{color}:N"] if color else [])],
    }
    if color:
        enc["color"] = alt.Color(f"{color}:N", sort=sort if color == x else alt.Undefined)
        enc["xOffset"] = alt.XOffset(f"{color}:N")
    chart = alt.Chart(alt.Data(values=data)).mark_bar().encode(**enc)
    return chart.properties(width=WIDTH, height=HEIGHT)


def heatmap(
    data: list[dict[str, Any]],
    x: str,
    y: str,
    value: str,
    *,
    title_x: str,
    title_y: str,
    order_x: list[str],
    order_y: list[str],
    fmt: str = "d",
) -> alt.LayerChart:
    """A heatmap with the value written in each cell."""
    base = alt.Chart(alt.Data(values=data)).encode(
        x=alt.X(f"{x}:N", sort=order_x, title=title_x),
        y=alt.Y(f"{y}:N", sort=order_y, title=title_y),
    )
    cells = base.mark_rect().encode(
        color=alt.Color(f"{value}:Q", scale=alt.Scale(scheme="blues"), legend=None),
        tooltip=[f"{x}:N", f"{y}:N", f"{value}:Q"],
    )
    text = base.mark_text(fontSize=14).encode(
        text=alt.Text(f"{value}:Q", format=fmt),
        color=alt.condition(f"datum.{value} > 0", alt.value("black"), alt.value("#999")),
    )
    cell = 56
    width = max(cell * len(order_x), 160)
    return alt.layer(cells, text).properties(width=width, height=cell * max(len(order_y), 2))


def interval_points(data: list[dict[str, Any]], x: str, lo: str, hi: str, y: str) -> alt.LayerChart:
    """A point per ``y`` at ``x`` with an error bar from ``lo`` to ``hi`` (e.g. a mean and
    its 95% confidence interval), on a 0–1 scale."""
    base = alt.Chart(alt.Data(values=data)).encode(y=alt.Y(f"{y}:N", title=None))
    rule = base.mark_rule(strokeWidth=2).encode(
        x=alt.X(f"{lo}:Q", scale=alt.Scale(domain=[0, 1]), title="mean score (95% CI)"),
        x2=f"{hi}:Q",
    )
    point = base.mark_point(filled=True, size=80).encode(
        x=f"{x}:Q",
        color=alt.Color(f"{y}:N", legend=None),
        tooltip=[f"{y}:N", f"{x}:Q", f"{lo}:Q", f"{hi}:Q"],
    )
    return alt.layer(rule, point).properties(width=WIDTH, height=40 * max(len(data), 2))


def scatter(data: list[dict[str, Any]], x: str, y: str, *, title_x: str, title_y: str) -> alt.Chart:
    """Points of ``y`` against ``x``."""
    chart = alt.Chart(alt.Data(values=data)).mark_circle(size=30, opacity=0.5)
    chart = chart.encode(x=alt.X(f"{x}:Q", title=title_x), y=alt.Y(f"{y}:Q", title=title_y))
    return chart.properties(width=WIDTH, height=HEIGHT)


def binned(
    groups: dict[str, Any],
    *,
    title: str,
    bins: int = 20,
    value_range: tuple[float, float] | None = None,
) -> alt.Chart:
    """A histogram of numbers counted here (NumPy), one colour per group: every row is
    counted, and the chart holds only the bins, however many rows there are."""
    arrays = {g: np.asarray(v, dtype=float) for g, v in groups.items()}
    arrays = {g: v[~np.isnan(v)] for g, v in arrays.items()}
    present = [v for v in arrays.values() if v.size]
    if value_range is None:
        lo = min((float(v.min()) for v in present), default=0.0)
        hi = max((float(v.max()) for v in present), default=1.0)
        value_range = (lo, hi if hi > lo else lo + 1)
    edges = np.linspace(value_range[0], value_range[1], bins + 1)
    data = []
    for group, values in arrays.items():
        counts, _ = np.histogram(values, bins=edges)
        data += [
            {"start": float(a), "end": float(b), "rows": int(n), "group": group}
            for a, b, n in zip(edges[:-1], edges[1:], counts, strict=True)
        ]
    chart = alt.Chart(alt.Data(values=data)).mark_bar(opacity=0.6, binSpacing=0)
    chart = chart.encode(
        x=alt.X("start:Q", title=title, bin="binned"),
        x2="end:Q",
        y=alt.Y("rows:Q", title="rows", stack=None),
        color=alt.Color("group:N", title=None),
        tooltip=["group:N", "start:Q", "end:Q", "rows:Q"],
    )
    return chart.properties(width=WIDTH, height=HEIGHT)
