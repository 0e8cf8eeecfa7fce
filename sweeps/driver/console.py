"""What `amm sweep run/resume` prints: a researcher's view instead of Ray Tune's tables.

Quiet by default (`--verbose` gives Ray's own output back): one plan line at the start (trials,
concurrency, ETA), one line per evaluation with the validation error and the best so far, one line
per finished or failed trial, and at the end the next commands to run.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import time
from typing import Any

from ray import tune

from amm_core import names
from amm_core.fmt import duration, percent
from amm_core.settings import report_path
from amm_core.shell import amm, script
from sweeps.planning.cost import concurrency, trial_configs, trial_seconds, wall_time
from sweeps.planning.spec import run_name
from sweeps.store.tracking import view_key

OBJECTIVE = names.VAL_ERROR_GY  # lower is better


def quiet_logs() -> None:
    """Silence Ray's and MLflow's chatter: Tune's tables and headings (the legacy reporter at
    verbose=0 prints nothing), INFO lines (database set-up, result files, token set-up), the
    experiment-snapshot warning and the tracking server's "View run ..." links. Call before Ray
    starts; `--verbose` skips it."""
    import mlflow  # noqa: F401  (it sets its logger's level on import: import first, then quiet)

    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # "View run ..."
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    for logger in ("mlflow", "alembic"):
        logging.getLogger(logger).setLevel(logging.WARNING)
    for logger in ("ray", "ray.tune"):
        logging.getLogger(logger).setLevel(logging.ERROR)
    # a failed trial task is Tune's traceback at ERROR level; the console says it in one line
    # (SweepConsole.on_trial_recover / on_trial_error), the trial's error file keeps it whole
    logging.getLogger("ray.tune.execution.tune_controller").addFilter(_NoTaskTracebacks())
    _drop_worker_death_notes()


def _drop_worker_death_notes() -> None:
    """The raylet's note that a worker died reaches the driver's stdout through Ray's
    error-message thread (`ray._private.worker.print_to_stdstream`, Ray's private API, pinned by
    `tuner.check_ray_version`); the console says it in one line (`on_trial_recover`)."""
    from ray._private import worker

    say = worker.print_to_stdstream
    if getattr(say, "amm_quiet", False):
        return

    def quiet(data: dict, ignore_prefix: bool) -> None:
        lines = data.get("lines") or []
        if data.get("pid") == "raylet" and any("died or was killed" in str(x) for x in lines):
            return
        say(data, ignore_prefix)

    quiet.amm_quiet = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = quiet


class _NoTaskTracebacks(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Trial task failed")


def trained(result: dict[str, Any]) -> int:
    """Steps a trial has trained, its restart phase included: what the plan's total counts."""
    return int(result.get(names.RESULT_TRAINED, result.get(names.STEP, 0)))


STOPPED = {names.STOP_PLATEAU: "plateau stop", names.STOP_TIME_BUDGET: "time budget"}


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class SweepConsole(tune.Callback):
    """Driver-side Tune callback printing progress lines (pickled with the tuner: no handles)."""

    def __init__(
        self,
        name: str,
        n_trials: int,
        parallel: int,
        steps: int | dict[str, int],
        longest_s: float = 0.0,
        max_failures: int = 0,
        planned_s: float = 0.0,
    ) -> None:
        self.name, self.n_trials, self.parallel = name, n_trials, parallel
        # the steps a trial trains in all (its restart phase included), by run name: the
        # variants of a spec may differ; an int: every trial's
        self.totals = steps if isinstance(steps, dict) else {}
        self.steps = max(steps.values(), default=0) if isinstance(steps, dict) else steps
        self.max_failures = max_failures  # the spec's retries of a failed trial
        # a trial's longest run when a time budget (train.max_minutes) ends it: the ETA's cap
        self.longest_s = longest_s
        # a trial's seconds as the plan priced them (the spec's cost), until trials report
        self.planned_s = planned_s
        self.last_eta = ""  # the ETA last printed: a line repeats none
        self.t0 = time.monotonic()
        self.started: dict[str, float] = {}
        self.durations: list[float] = []
        self.best: tuple[float, str] | None = None
        self.done = 0

    def __setstate__(self, state: dict[str, Any]) -> None:  # a resumed sweep: a fresh clock
        self.__dict__.update(state)
        self.t0, self.started = time.monotonic(), {}

    def _line(self, label: str, text: str) -> None:
        """One progress line: how many trials are done, the trial's run name, what happened."""
        _say(f"[{self.done}/{self.n_trials} done] {label:<24} {text}")

    def _eta(self, trials: list, now_at: dict[str, int] | None = None) -> str:
        """The sweep's time left ("" when nothing is known yet): from the trials that finished,
        else from the running trials' pace, else from the plan's price of a trial. `now_at`:
        trial id -> the step of the result being reported (Tune updates a trial's last result
        after its callbacks: without it, the first evaluation would know no pace)."""
        now = time.monotonic()
        if self.durations:
            per = sum(self.durations) / len(self.durations)
        else:
            rates = []
            for t in trials:
                step = (now_at or {}).get(t.trial_id) or trained(t.last_result or {})
                if step:
                    began = self.started.get(t.trial_id, self.t0)
                    est = (now - began) / step * self.total(run_name(t.config))
                    rates.append(min(est, self.longest_s) if self.longest_s else est)
            if not rates and not self.planned_s:
                return ""
            per = sum(rates) / len(rates) if rates else self.planned_s
        left = []
        for t in trials:
            if t.status in ("RUNNING", "PENDING", "PAUSED"):
                ran = now - self.started.get(t.trial_id, now)
                left.append(max(per - ran, 0.0))
        left += [per] * max(0, self.n_trials - len(trials))  # not created yet (searchers)
        left_s = wall_time(left, self.parallel)
        return duration(left_s) if left_s >= 1 else ""  # the last steps: the test set is left

    def total(self, label: str) -> int:
        """Steps the trial of run name `label` trains in all."""
        return self.totals.get(label, self.steps)

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        self.started.setdefault(trial.trial_id, time.monotonic())

    on_trial_restore = on_trial_start

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        err = result.get(OBJECTIVE)
        if not isinstance(err, int | float) or result.get(names.RESULT_FINAL):
            return
        label = run_name(trial.config)
        if self.best is None or err < self.best[0]:
            self.best = (err, label)
        step = trained(result)
        eta = self._eta(trials, {trial.trial_id: step})
        # an ETA only where it changed: two trials evaluating at once would repeat it
        shown, self.last_eta = (f"  ETA {eta}" if eta and eta != self.last_eta else ""), eta
        self._line(
            label,
            f"step {step:>6}/{self.total(label)}  val error {percent(err)}  "
            f"best {percent(self.best[0])} ({self.best[1]}){shown}",
        )

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self.done += 1
        if trial.trial_id in self.started:
            self.durations.append(time.monotonic() - self.started[trial.trial_id])
        last = trial.last_result or {}
        why = last.get(names.STOP_REASON)  # a plateau stop or a time budget ended it early
        early = f" ({STOPPED[why]} at step {last.get(names.STEP)})" if why in STOPPED else ""
        self._line(
            run_name(trial.config),
            f"finished: val error {percent(last.get(OBJECTIVE))}, "
            f"test error {percent(last.get(names.TEST_ERROR_GY))}{early}",
        )

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        """A trial's worker failed and Tune retries it: one line, not Tune's traceback."""
        step = (trial.last_result or {}).get(names.STEP, 0)
        of = f" of {self.max_failures}" if self.max_failures > 0 else ""
        self._line(
            run_name(trial.config),
            f"failed ({failure_cause(trial)}); retrying from step {step}, "
            f"failure {trial.num_failures}{of}",
        )

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self.done += 1
        self._line(run_name(trial.config), f"FAILED (details: {amm()} sweep status {self.name})")


def failure_cause(trial) -> str:
    """The exception's name from the trial's error text (e.g. TrainingError), or that the
    worker process died (Ray's text for it names no exception; Ray cannot tell a `kill -9` or
    the kernel's OOM killer from a crash, so neither can this line)."""
    import re

    from sweeps.driver.callback import error_text

    text = error_text(trial)
    found = re.findall(r"\b([A-Z]\w*(?:Error|Exception|Interrupt))\b", text)
    if found:
        return found[-1]
    if "worker process has died" in text:
        return "the worker process died: killed or crashed"
    return "the worker failed"


def plan_line(name: str, n: int, parallel: int, cpu: float, cpus: float, eta_s: float | None,
              uri: str, whole: bool = False, budget: str = "") -> str:  # fmt: skip
    """`whole`: the ETA counts evaluations and figures too (the spec's cost.trial_overhead_s);
    `budget`: what ends a trial ("600 steps each")."""
    eta = "ETA after the first evaluations"
    if eta_s:
        eta = f"ETA ~{duration(eta_s)}" + ("" if whole else " of training")
    return (
        f"sweep {name}: {n} trials{' of ' + budget if budget else ''}, {parallel} at a time "
        f"({cpu:g} CPU each, {cpus:g} CPUs), {eta}; tracking {uri}; Ray's output: --verbose"
    )


def budget_words(cfgs: list) -> str:
    """What ends the trials, as the plan line says it: "600 steps each" (a step budget: the
    same numbers on any machine; a restart phase's steps counted in), with "or N minutes" where
    train.max_minutes also stops them."""
    from amm_core.config import trained_steps

    steps = {trained_steps(c) for c in cfgs}
    minutes = {c.train.max_minutes for c in cfgs}
    text = f"{steps.pop():,} steps each" if len(steps) == 1 else f"up to {max(steps):,} steps"
    if any(minutes):
        text += f" or {max(minutes):g} minutes"
    return text


SEEN = ("table", "report", "status")  # the commands `next_commands` can leave out


def next_commands(
    name: str, uri: str, experiment: str, experiment_id: str = "", seen: tuple[str, ...] = ()
) -> str:
    """What to run next, each command as it runs when pasted into the shell that ran the sweep
    (`.venv/bin/amm ...` where `amm` is not on PATH; amm_core/shell.py), but those in `seen`
    (the caller just ran them: `make demo` runs table and report); one MLflow UI command."""
    cmds = [
        ("table", f"{amm()} table {name}", "mean ± std per grid cell (percent)"),
        ("report", f"{amm()} report {name}", f"one offline HTML page: {report_path(name)}"),
        ("status", f"{amm()} sweep status {name}", "every trial's state and errors"),
    ]
    cmds = [(c, why) for key, c, why in cmds if key not in seen]
    width = max((len(c) for c, _ in cmds), default=0)
    lines = ["next:", *(f"  {c:<{width}}  # {why}" for c, why in cmds)]
    # the sweep's trials as a flat table sorted by the test error, in MLflow 3's "Model training"
    # view: the shared view the sweep stored on its experiment (tracking.share_trials_view)
    page = (
        f"/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
        f"&viewStateShareKey={view_key(name)}"
    )
    if uri.startswith(("http://", "https://")):
        return "\n".join([*lines, f"  open {uri.rstrip('/')}{page}  (the tracking server's UI)"])
    lines.append(f"  {script('mlflow')} ui --backend-store-uri {shlex.quote(uri)} --port 5000")
    lines.append(f"      then open http://127.0.0.1:5000{page}")
    objective = names.percent_key(names.TEST_ERROR_GY)
    lines.append(f"      (experiment {experiment}: the sweep's trials, sorted by {objective})")
    return "\n".join(lines)


def start(spec, name: str, uri: str, cells: list[dict[str, Any]] | None = None) -> SweepConsole:
    """Print the plan line of a sweep about to run on the connected Ray -> its console callback.
    `cells`: the grid cells this run trains (default: the spec's)."""
    import ray

    from amm_core.config import trained_steps
    from amm_core.run.cost import budget_s

    res = ray.cluster_resources()
    cpus, gpus = res.get("CPU", 0.0), res.get("GPU", 0.0)
    cfgs = trial_configs(spec, cells)
    n = len(cfgs)
    par = concurrency(n, spec.cpu, spec.gpu, spec.max_concurrent, cpus, gpus)
    labels = [run_name(c) for c in (cells if cells is not None else spec.cells())]
    steps = [trained_steps(c) for c in cfgs]
    totals = dict(zip(labels, steps, strict=False)) if len(labels) == len(cfgs) else max(steps)
    eta, planned = None, 0.0
    if spec.cost.steps_per_sec:
        per_trial = trial_seconds(cfgs, spec.cost.steps_per_sec, spec.cost.trial_overhead_s)
        eta = wall_time(per_trial, par)
        planned = sum(per_trial) / len(per_trial)
    whole = spec.cost.trial_overhead_s > 0
    _say(plan_line(name, n, par, spec.cpu, cpus, eta, uri, whole, budget_words(cfgs)))
    phases = {(c.train.restarts, c.train.restart_steps) for c in cfgs if c.train.restarts > 1}
    phases = sorted(phases)
    if phases:  # the phase reports nothing until its choice: say why the console is quiet
        every = all(c.train.restarts > 1 for c in cfgs)
        who = "each trial" if every else "a trial with train.restarts"
        starts = " or ".join(f"{r} starts of {s:,} steps" for r, s in phases)
        first = " or ".join(f"{r * s:,}" for r, s in phases)
        _say(
            f"{who} first trains {starts} (train.restarts): its first lines come after "
            f"{first} steps"
        )
    budgets = [budget_s(c) for c in cfgs]  # the ETA's cap: the longest trial, when all have one
    longest = max(budgets) + spec.cost.trial_overhead_s if all(budgets) else 0.0
    return SweepConsole(name, n, par, totals, longest, spec.max_failures, planned)
