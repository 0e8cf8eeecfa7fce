"""Numbers as the console prints them: durations and errors in percent."""

from __future__ import annotations

import math
from typing import Any


def duration(seconds: float) -> str:
    """123 -> '2m03s', 4000 -> '1h06m', 5 -> '5s'."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def percent(x: Any) -> str:
    """A fraction as '12.34 %'; '-' when missing or not finite."""
    return f"{100 * x:.2f} %" if isinstance(x, int | float) and math.isfinite(x) else "-"
