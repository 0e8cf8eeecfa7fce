"""Plateau stop (train.stop_on_plateau): end a run whose validation error stopped improving.

The loop feeds each evaluation's val/error_gy to `Plateau.update`; after `patience` evaluations
in a row without an improvement on the best so far (a drop of at least `delta`, absolute, error
as a fraction; with delta 0 any drop), the run ends like a finished one: test evaluation,
final.json with stop_reason "plateau", figures.
The count lives in the checkpoint, so a resumed run stops where an uninterrupted one would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Plateau:
    patience: int  # evaluations without improvement that end the run; 0 = never
    delta: float = 0.0  # an improvement is a drop of at least this below the best so far
    best: float = math.inf
    since: int = 0  # evaluations since the best

    def update(self, value: float) -> bool:
        """Record one evaluation; True when the run should end here."""
        if value < self.best and value <= self.best - self.delta:  # the first: best is inf
            self.best, self.since = value, 0
        else:
            self.since += 1
        return self.done

    @property
    def done(self) -> bool:
        return self.patience > 0 and self.since >= self.patience

    def state_dict(self) -> dict[str, float | int]:
        return {"best": self.best, "since": self.since}

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        self.best, self.since = float(state["best"]), int(state["since"])
