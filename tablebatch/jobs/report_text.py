"""How the report writes its numbers (shared by the kinds' sections)."""

from __future__ import annotations


def pct(x: float | None) -> str:
    """A share as a percentage with one decimal, or an en dash when there is none."""
    return "–" if x is None else f"{100 * x:.1f}%"


def num(x: float | None) -> str:
    """A number with three decimals, or an en dash when there is none."""
    return "–" if x is None else f"{x:.3f}"
