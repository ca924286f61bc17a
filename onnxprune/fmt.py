"""Number formatting shared by the CLI and the HTML report (no heavy imports)."""

from __future__ import annotations

import math


def human_count(n) -> str:
    """1234567 -> '1.23M' (None and non-numbers -> '?')."""
    if isinstance(n, bool) or not isinstance(n, (int, float)):
        return "?"
    if not math.isfinite(n):
        return str(n)
    for unit, div in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:g}" if isinstance(n, float) else str(n)
