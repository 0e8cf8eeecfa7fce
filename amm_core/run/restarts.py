"""The restart phase (docs/method.md section 9): train `train.restarts` starts of the model for
`train.restart_steps` each, keep the one whose clustering term is lowest, and go on with it to
the run's end. `train()` is the entry point of a run of any config: with one start it is
`amm_core.run.train.run`; with more it trains each start with the loop's `fit` (no test), then
`run`s the kept start from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amm_core import names
from amm_core.config import Config, phase_steps, total_steps, trained_steps
from amm_core.fs import json_lines
from amm_core.run.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    step_dir,
)
from amm_core.run.report import Report, ReportFn
from amm_core.run.state import saved_start
from amm_core.run.train import (
    LogFn,
    NoteFn,
    RunResult,
    StopFn,
    Tick,
    fit,
    run,
    signal_report,
    write_final,
)


@dataclass(frozen=True)
class Start:
    """One start of the restart phase, trained."""

    index: int  # which start (`amm_core.run.train.run`'s `start`)
    score: float  # loss/cluster at its last evaluation (training batches, no label)
    checkpoint: Path  # its last checkpoint
    history: list[dict[str, Any]]  # its metrics.jsonl lines
    seconds: float  # its training seconds (its last checkpoint's)


def train(
    cfg: Config,
    out_dir: str | Path,
    *,
    report: ReportFn | None = None,
    should_stop: StopFn | None = None,
    resume_from: str | Path | None = None,
    tick: Tick | None = None,
    log: LogFn | None = None,
    note: NoteFn | None = None,
) -> RunResult:
    """Train a run of `cfg` in out_dir, its restart phase first when train.restarts > 1 (the
    starts under out_dir/starts/, each trained by the loop's `fit`, never tested). One time budget
    (train.max_minutes) covers the phase and the rest: the kept start's checkpoint carries the
    phase's training seconds; a run resumed after the phase goes on with the start it kept."""
    out_dir = Path(out_dir).resolve()
    hooks = {"report": report, "should_stop": should_stop, "log": log, "note": note}
    if cfg.train.restarts == 1:
        return run(cfg, out_dir, resume_from=resume_from, tick=tick, **hooks)
    if resume_from is None:
        chosen = _phase(cfg, out_dir, should_stop, tick, log, note)
        if isinstance(chosen, RunResult):  # should_stop ended the phase: the run is at step 0
            write_final(out_dir, signal_report(0, total_steps(cfg), chosen.signal))
            return RunResult(0, None, True, chosen.stop_reason, signal=chosen.signal)
        resume_from, start = _adopt(chosen, out_dir, report, cfg), chosen.index
    else:  # a run resumed after its phase: the checkpoint says which start it kept
        start = saved_start(load_checkpoint(resume_from))
    offset = phase_steps(cfg)  # the phase's other starts trained first
    return run(
        cfg,
        out_dir,
        start=start,
        resume_from=resume_from,
        tick=None if tick is None else lambda s, n: tick(s + offset, n + offset),
        extra_metrics={names.RESTART_CHOSEN: start},
        extra_info=_phase_scores(out_dir, cfg.train.restarts),
        **hooks,
    )


def _phase(
    cfg: Config,
    out_dir: Path,
    should_stop: StopFn | None,
    tick: Tick | None,
    log: LogFn | None,
    note: NoteFn | None,
) -> Start | RunResult:
    """Train the starts in out_dir/starts/start_K (a start already trained there is not trained
    again, one cut short goes on from its last checkpoint), each within what the starts before
    it left of train.max_minutes; the one whose clustering term (loss/cluster, the mean over the
    train.log_every steps before its last evaluation) is lowest, or the stopped start's result
    when should_stop ended the phase. Labels play no part in the choice, and the starts see no
    test image. Each start's outcome and the choice go to `note`."""

    def say(line: str) -> None:
        if note is not None:
            note(f"restart phase: {line}")

    t = cfg.train
    total = trained_steps(cfg)
    starts: list[Start] = []
    spent = 0.0  # the trained starts' seconds
    spent_note = f"the time budget train.max_minutes={t.max_minutes:g} is spent"
    why_not = ""  # why the starts after the last trained one were skipped
    for k in range(t.restarts):
        left = 60 * t.max_minutes - spent if t.max_minutes else None  # seconds
        if k and left is not None and left <= 0:
            why_not = spent_note
            break
        folder = names.start_dir(out_dir, k)
        overrides = {"train.restarts": 1, "train.steps": t.restart_steps}
        overrides.update({"train.figures": False, "train.stop_on_plateau": 0})
        if left is not None:
            overrides["train.max_minutes"] = max(left, 1e-3) / 60
        last = latest_checkpoint(folder / names.CHECKPOINTS_DIR)
        result = None
        if last is None or names.checkpoint_step(last.name) != t.restart_steps:
            base = k * t.restart_steps
            result = fit(
                cfg.replace(**overrides),
                folder,
                start=k,
                should_stop=should_stop,
                resume_from=last,
                tick=None if tick is None else lambda s, _n, b=base: tick(b + s, total),
                log=log,  # the console is not silent in the phase
                note=note,
            )
            if result.reason == names.STOP_SIGNAL:
                return RunResult(result.state.step, result.checkpoint, True, result.reason,
                                 signal=result.signal)  # fmt: skip
            last = result.checkpoint
        history = json_lines(folder / names.METRICS_FILE)
        assert last is not None and history, f"start {k}: no evaluation in {folder}"
        seconds = float(load_checkpoint(last).get("elapsed_s", 0.0))
        starts.append(Start(k, float(history[-1][names.LOSS_CLUSTER]), last, history, seconds))
        spent += seconds
        step = history[-1][names.STEP]
        cut = result is not None and result.reason == names.STOP_TIME_BUDGET
        say(
            f"start {k + 1}/{t.restarts} "
            + ("trained" if result is not None else "found trained")
            + f" to step {step}/{t.restart_steps}"
            + (f" (cut short: train.max_minutes={t.max_minutes:g} spent)" if cut else "")
            + f": {names.LOSS_CLUSTER} {starts[-1].score:.4f}"
        )
        if cut:
            why_not = spent_note
            break
    if len(starts) < t.restarts:
        first, last_k = len(starts) + 1, t.restarts
        which = f"start {first}" if first == last_k else f"starts {first}-{last_k}"
        say(f"{which} of {t.restarts} skipped: {why_not}")
    best = min(starts, key=lambda s: s.score)  # the first of equals
    among = f"of the {len(starts)} trained" if len(starts) > 1 else "the only one trained"
    say(f"going on with start {best.index + 1} (lowest {names.LOSS_CLUSTER}, {among})")
    return dataclasses.replace(best, seconds=sum(s.seconds for s in starts))


def _phase_scores(out_dir: Path, restarts: int) -> dict[str, str]:
    """What the choice read and what it could not: each start's clustering term at its last
    evaluation, "0: -2.0831, 1: -2.1782, ..." (RESTART_SCORES), and its validation error there,
    "0: 0.0352, 1: 0.1204, ..." (RESTART_VAL_ERRORS; for the analysis of split starts). Only the
    starts whose folders are here: a run resumed on another machine may lack them."""
    scores, errors = [], []
    for k in range(restarts):
        history = json_lines(names.start_dir(out_dir, k) / names.METRICS_FILE)
        if history:
            scores.append(f"{k}: {history[-1][names.LOSS_CLUSTER]:.4f}")
            if names.VAL_ERROR_GY in history[-1]:
                errors.append(f"{k}: {history[-1][names.VAL_ERROR_GY]:.4f}")
    return {names.RESTART_SCORES: ", ".join(scores), names.RESTART_VAL_ERRORS: ", ".join(errors)}


def _adopt(start: Start, out_dir: Path, report: ReportFn | None, cfg: Config) -> Path:
    """Make the chosen start the run's beginning: its last checkpoint, with the whole phase's
    training seconds (`start.seconds`), becomes the run's first; its evaluations the run's first
    lines of metrics.jsonl (and reports, of the run's total steps). The start's own stop reason
    is dropped: the run goes on past it; unless the phase spent train.max_minutes: then its last
    line says so, as a run's last evaluation does (and `run` trains no step more). Returns the
    checkpoint to resume from."""
    ckpt = step_dir(out_dir / names.CHECKPOINTS_DIR, names.checkpoint_step(start.checkpoint.name))
    if not ckpt.exists():
        save_checkpoint(ckpt, {**load_checkpoint(start.checkpoint), "elapsed_s": start.seconds})
    out_dir.mkdir(parents=True, exist_ok=True)
    history = [{k: v for k, v in m.items() if k != names.STOP_REASON} for m in start.history]
    if cfg.train.max_minutes and start.seconds > 60 * cfg.train.max_minutes:
        history[-1][names.STOP_REASON] = names.STOP_TIME_BUDGET
    (out_dir / names.METRICS_FILE).write_text("".join(json.dumps(m) + "\n" for m in history))
    for metrics in history if report is not None else []:
        report(Report.from_line(metrics, total_steps(cfg)), None, False)
    return ckpt
