"""`amm sweep plan`: the trial grid, the trial count, resources and an estimated cost.

The cost comes from a steps-per-second figure that is either stored in the spec (`cost:`
section, with a note on where it was measured) or measured now (`--measure`: a few training
steps of the base config on this machine). No Ray, no MLflow, no training beyond that.
"""

from __future__ import annotations

from typing import Any

from amm_core.config import trained_steps
from amm_core.run.cost import RunCost, evaluations
from amm_core.shell import amm
from sweeps.planning.cost import concurrency, trial_configs, trial_seconds, wall_time
from sweeps.planning.spec import SweepSpec, cpu_route, load_spec, run_name, spec_arg

LIST_MAX = 50  # grids up to this many trials are listed in full
LIST_HEAD = 20  # larger ones: the first trials, then a count (`--all` lists every trial)
WARN_TRIALS = 1000  # above this many trials, plan prints a warning


def measure_cost(spec: SweepSpec, steps: int = 10) -> RunCost:
    """Measure the spec's trial here (amm_core.run.cost): its step, one evaluation, its end."""
    import torch

    from amm_core.run.cost import measure

    torch.set_num_threads(max(1, int(spec.cpu)))
    return measure(spec.trial_config({}), steps=steps)


def plan_text(
    spec: SweepSpec,
    steps_per_sec: float | None = None,
    source: str = "",
    list_all: bool = False,
    cost: RunCost | None = None,
) -> str:
    """The plan; `cost` (measured) prices each trial's evaluations and end, else the spec's
    cost.trial_overhead_s does."""
    lines = [
        f"sweep spec: {spec.path}",
        f"base preset: {spec.base}",
        f"MLflow experiment: {spec.experiment}",
    ]
    if spec.description:
        lines.append(f"description: {spec.description}")
    if spec.overrides:
        lines.append("overrides: " + ", ".join(f"{k}={v}" for k, v in spec.overrides.items()))
    cfgs = trial_configs(spec)  # one per trial
    steps = [trained_steps(c) for c in cfgs]
    budgets = [c.train.max_minutes for c in cfgs]
    plateau = [c.train.stop_on_plateau for c in cfgs]
    evals = [evaluations(c) for c in cfgs]
    if spec.search is None:
        for k, vals in spec.axes().items():
            lines.append(f"axis {k}: {vals}")
        lines.append("")
        lines.append(f"{'#':>4}  {'run name':<48} {'steps':>8}  config hash")
        cells = spec.cells()
        shown = len(cells) if list_all or len(cells) <= LIST_MAX else LIST_HEAD
        for i, (cell, cfg) in enumerate(zip(cells[:shown], cfgs, strict=False)):
            lines.append(f"{i + 1:>4}  {run_name(cell):<48} {steps[i]:>8}  {cfg.hash()}")
        if shown < len(cells):
            lines.append(f"   ... {len(cells) - shown} more trials (--all lists every trial)")
    else:
        s = spec.search
        lines.append(f"Optuna search: {s.num_samples} samples, {s.mode} {s.metric}, seed {s.seed}")
        for k, dim in s.space.items():
            rng = dim["values"] if dim["type"] == "choice" else f"[{dim['low']}, {dim['high']}]"
            lines.append(f"  {k}: {dim['type']} {rng}")
    if spec.scheduler:
        sc = spec.scheduler
        lines.append(
            f"ASHA: {sc.mode} {sc.metric} by {sc.time_attr}, grace {sc.grace_period}, "
            f"max_t {sc.max_t}, reduction {sc.reduction_factor:g}"
        )
    n = spec.num_trials()
    lines.append("")
    lines.append(f"trials: {n}")
    if n > WARN_TRIALS:
        lines.append(
            f"warning: {n:,} trials is a large sweep (over {WARN_TRIALS:,}); check the axes "
            f"and the estimated cost below before `{amm()} sweep run`"
        )
    lines.append(f"resources per trial: {spec.cpu:g} CPU, {spec.gpu:g} GPU")
    lines.append(
        f"steps per trial: {min(steps)}" + (f" to {max(steps)}" if len(set(steps)) > 1 else "")
    )
    if any(budgets):
        lines.append(f"time budget per trial: {_minutes(budgets)} (train.max_minutes)")
    if any(plateau):
        lines.append(
            f"plateau stop: after {_counts(plateau)} evaluations without improvement "
            "(train.stop_on_plateau)"
        )
    if steps_per_sec:
        seconds = trial_seconds(cfgs, steps_per_sec)
        total_s = sum(seconds)
        bound = [
            why for why, on in (("ASHA", spec.scheduler), ("the plateau stop", any(plateau))) if on
        ]
        lines.append(f"steps/sec per trial: {steps_per_sec:.2f} ({source})")
        lines.append(
            f"estimated cost: {total_s / 3600:.2f} trial-hours "
            f"({total_s / 3600 * spec.cpu:.2f} CPU-hours, "
            f"{total_s / 3600 * spec.gpu:.2f} GPU-hours)"
            + (f" (an upper bound with {' and '.join(bound)})" if bound else "")
        )
        if cost is not None:  # measured: each trial's evaluations and end
            extra = [e * cost.eval_s + cost.end_s for e in evals]
            lines.append(
                f"evaluation {cost.eval_s:.1f} s each, end of a run {cost.end_s:.1f} s "
                "(test, gen/* metrics, figures; measured now)"
            )
        else:  # the spec's stored figure: evaluations, figures, the trial's start
            extra = [spec.cost.trial_overhead_s] * len(seconds)
        measured = cost is not None or bool(spec.cost.trial_overhead_s)
        trials = [t + x for t, x in zip(seconds, extra, strict=True)]
        lines.append(_wall_line(spec, trials, n, measured))
    else:
        lines.append(
            "estimated cost: unknown (no steps/sec stored in the spec's cost: "
            f"section; run `{amm()} sweep plan SPEC --measure`)"
        )
    return "\n".join(lines)


def _minutes(budgets: list[float]) -> str:
    on = sorted({b for b in budgets if b})
    rest = " (some trials: none)" if 0 in budgets else ""
    return (f"{on[0]:g}" if len(on) == 1 else f"{on[0]:g} to {on[-1]:g}") + " min" + rest


def _counts(values: list[int]) -> str:
    on = sorted({v for v in values if v})
    rest = " (some trials: off)" if 0 in values else ""
    return (f"{on[0]}" if len(on) == 1 else f"{on[0]} to {on[-1]}") + rest


# Ray + MLflow start-up of `amm sweep run` against `amm train` on the same trial, measured by
# benchmarks/sweep_scaling.py (docs/performance.md); trials ran at their alone speed there, so
# the wall time of trials in parallel is not scaled down
START_S = 17.0


def _wall_line(spec: SweepSpec, per_trial: list[float], n: int, measured: bool) -> str:
    """Wall time on this machine: as many trials at once as its CPUs (and the spec) allow."""
    import os

    import torch

    from amm_core.fmt import duration

    cpus = os.cpu_count() or 1
    gpus = torch.cuda.device_count() if spec.gpu > 0 else 0
    par = concurrency(n, spec.cpu, spec.gpu, spec.max_concurrent, cpus, gpus)
    where = f"{cpus} CPUs" + (f", {gpus} GPUs" if spec.gpu > 0 else "")
    if spec.gpu > 0 and gpus == 0:
        return (
            f"wall time here: no GPU on this machine ({where}); on a cluster that runs "
            f"P trials at once: about {duration(sum(per_trial))} / P of training\n"
            f"to run it on this machine's CPUs instead ({max(spec.cpu, 1):g} CPU per trial):\n"
            f"  {amm()} sweep run {spec_arg(spec)} {cpu_route(spec)}\n"
            f"  (its time on CPUs: {amm()} sweep plan {spec_arg(spec)} {cpu_route(spec)} "
            "--measure)"
        )
    if measured:
        total = wall_time(per_trial, par) + START_S
        return (
            f"wall time on this machine ({where}, {par} trial(s) at a time): about "
            f"{duration(total)} (training, evaluations and figures, and about "
            f"{duration(START_S)} of Ray and MLflow start-up)"
        )
    return (
        f"wall time on this machine ({where}, {par} trial(s) at a time): about "
        f"{duration(wall_time(per_trial, par))} of training + about {duration(START_S)} "
        "of Ray and MLflow start-up (evaluation and figures come on top)"
    )


def plan(
    spec_path: str,
    overrides: dict[str, Any] | None = None,
    measure: bool = False,
    list_all: bool = False,
) -> str:
    spec = load_spec(spec_path, overrides)
    cost = None
    if measure:
        cost = measure_cost(spec)
        sps = 1 / cost.step_s
        source = (
            f"measured now: 3 rounds of 10 steps of the trial's config, {spec.cpu:g} CPU thread(s)"
        )
    elif spec.cost.steps_per_sec:
        sps = spec.cost.steps_per_sec
        source = f"stored in the spec: {spec.cost.measured_on or 'no note'}"
    else:
        sps, source = None, ""
    return plan_text(spec, sps, source, list_all, cost)
