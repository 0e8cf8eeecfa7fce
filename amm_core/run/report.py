"""What the loop tells its hooks after each evaluation and once at the end: a `Report`, read by
the console (`amm_cli/progress.py`), Ray Tune (`sweeps/driver/trainable.py`) and MLflow
(`sweeps/driver/callback.py`) alike. Numbers and words come apart: `metrics` are what a tracker
plots, `info` what it keeps as tags (why training ended, the error mapping)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amm_core import names


@dataclass(frozen=True)
class Report:
    """One evaluation (or the end of the run: the test metrics and the run's bookkeeping)."""

    step: int  # the training step it belongs to
    total_steps: int  # the steps the run plans (train.steps, or train.epochs as steps)
    metrics: dict[str, float]  # losses, val/* or test/*, diag/*, gen/*, perf/*, epoch
    info: dict[str, str] = field(default_factory=dict)  # stop_reason, error_mapping, ...

    @property
    def stop_reason(self) -> str:
        """Why training ended (names.STOP_*) on the last evaluation and the end; else ''."""
        return self.info.get(names.STOP_REASON, "")

    def line(self) -> dict[str, Any]:
        """As metrics.jsonl and final.json store it: one flat mapping, the step first."""
        return {names.STEP: self.step, **self.metrics, **self.info}

    @classmethod
    def from_line(cls, line: dict[str, Any], total_steps: int = 0) -> Report:
        """A stored line (`line()`, e.g. a start's metrics.jsonl, or a Tune result) read back:
        its strings are the info, its other values the metrics."""
        rest = {k: v for k, v in line.items() if k != names.STEP}
        info = {k: v for k, v in rest.items() if isinstance(v, str)}
        metrics = {k: v for k, v in rest.items() if k not in info}
        return cls(int(line.get(names.STEP, 0)), total_steps, metrics, info)


# report(report, checkpoint_dir, final): final is True once, on the test metrics at the end
ReportFn = Callable[[Report, Path | None, bool], None]
