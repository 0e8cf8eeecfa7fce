"""A sweep's cost, from its trials' configs: each trial's seconds at a steps/s figure (its steps,
at most its time budget: `amm_core.run.cost`), how many run at once, and the wall time. `amm sweep
plan` prints them; the sweep console's first line (its ETA) counts the same."""

from __future__ import annotations

from typing import Any

from amm_core.config import Config
from amm_core.run.cost import budgeted_seconds
from sweeps.planning.spec import SweepSpec


def trial_configs(spec: SweepSpec, cells: list[dict[str, Any]] | None = None) -> list[Config]:
    """One config per trial: the grid's cells (or the given ones), or a search's base config
    once per sample."""
    if cells is None and spec.search is not None:
        return [spec.trial_config({})] * spec.search.num_samples
    return [spec.trial_config(c) for c in (spec.cells() if cells is None else cells)]


def trial_seconds(cfgs: list[Config], steps_per_sec: float, overhead: float = 0.0) -> list[float]:
    """Seconds of each trial: its steps at steps_per_sec, at most its time budget
    (train.max_minutes), plus `overhead` (the spec's measured cost.trial_overhead_s)."""
    return [budgeted_seconds(c, steps_per_sec) + overhead for c in cfgs]


def concurrency(n_trials: int, cpu: float, gpu: float, max_concurrent: int, cpus: float,
                gpus: float) -> int:  # fmt: skip
    """How many trials run at once: the spec's cap and what the machine or cluster fits."""
    fit = [n_trials]
    if max_concurrent:
        fit.append(max_concurrent)
    if cpu > 0:
        fit.append(int(cpus // cpu))
    if gpu > 0:
        fit.append(int(gpus // gpu))
    return max(1, min(fit))


def wall_time(trial_seconds: list[float], parallel: int) -> float:
    """Wall time of trials run `parallel` at a time, longest first into the first free slot."""
    slots = [0.0] * max(1, parallel)
    for d in sorted(trial_seconds, reverse=True):
        i = slots.index(min(slots))
        slots[i] += d
    return max(slots, default=0.0)
