"""Why training ends, decided here only: `stop_reason`. The loop asks it before each step (a
stop asked for: `should_stop()`, e.g. a signal), after each step (the planned steps done, the
time budget spent: that step is then evaluated, the last), after each evaluation (the plateau,
`amm_core.run.plateau`) and on a resume (a checkpoint whose evaluation already ended the run)."""

from __future__ import annotations

import time

from amm_core import names
from amm_core.run.plateau import Plateau


def stop_reason(
    step: int,
    steps: int,
    *,
    asked: bool = False,
    deadline: float | None = None,
    plateau: Plateau | None = None,
) -> str:
    """names.STOP_* for training that ends at `step` of `steps`, '' to go on. In this order: a
    stop `asked` for (names.STOP_SIGNAL: no test), the steps done, the time budget spent (a
    `time.monotonic()` deadline), the plateau reached (`plateau.done`)."""
    if asked:
        return names.STOP_SIGNAL
    if step >= steps:
        return names.STOP_STEPS
    if deadline is not None and time.monotonic() > deadline:
        return names.STOP_TIME_BUDGET
    if plateau is not None and plateau.done:
        return names.STOP_PLATEAU
    return ""
