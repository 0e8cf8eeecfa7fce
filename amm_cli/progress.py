"""What `amm train` prints while it trains, through the loop's hooks (`tick`, `log`, `report`):
the loop itself prints nothing.

Before anything slow (torch, the data) one line says what will run and what the time budget
covers (`plan_line`). On a terminal a tqdm bar shows progress; without one (Slurm,
nohup, CI logs) this prints a first line after FIRST_LINE_STEPS steps (or FIRST_LINE_SECONDS)
with steps/s and ETA, then one plain line per evaluation: step, losses, validation error in
percent, images/s and ETA.
Either way the end-of-run phases (test evaluation, figures) are announced once, when the loop's
last evaluation says why training ended,
the final metrics are rounded for reading (final.json keeps full precision), and the last line
says why training stopped.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from amm_core import names
from amm_core.config import Config, phase_steps, total_steps
from amm_core.fmt import duration, percent
from amm_core.run.report import Report

# the first plain line comes after this many steps, or this long after the first step (a slow
# model), whichever is first, unless an evaluation line came before: a long run is not silent
# until its first evaluation
FIRST_LINE_STEPS = 20
FIRST_LINE_SECONDS = 15.0


def _write(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)  # above a live bar, if there is one
    sys.stderr.flush()


class TrainConsole:
    """The hooks of `amm_core.run.restarts.train`: `tick`, `log` and the `report` hook (the
    instance): a bar when `bar`, lines when `lines`, phase notes always.

    One step count for the run (its train.steps, what metrics.jsonl says); the restart phase's
    steps are named as a start's ("restart phase, start 2/3: step 500/1000"); the ETA counts
    every step left, the phase's included; the bar counts them all."""

    def __init__(self, cfg: Config, lines: bool, resumed_step: int = 0, bar: bool = False) -> None:
        self.cfg, self.lines, self.use_bar = cfg, lines, bar
        self.bar: Any = None  # the tqdm bar, from the first tick on
        self.val_err = "-"  # the bar's postfix: validation error (%) of the last evaluation
        self.t0, self.step0 = time.monotonic(), resumed_step
        self.first: tuple[int, float] | None = None  # (step, time) of the first step done
        # (step, total, time) of the newest step: steps and total count the restart phase's
        # other starts (the loop's tick does), so the ETA's rate holds across the phase
        self.last: tuple[int, int, float] | None = None
        self.spoke = False  # a plain line was printed already
        self.done = False  # the "training done" line was printed

    def tick(self, step: int, total: int) -> None:
        """After each step (the loop's `tick` hook): the first line, once, in line mode."""
        now = time.monotonic()
        self.last = (step, total, now)
        if self.use_bar:
            self._bar(step, total)
        if self.first is None:  # the first step pays for warm-up: the rate starts after it
            self.first = (step, now)
            return
        run_step = step - phase_steps(self.cfg)
        if not self.lines or self.spoke or step >= total:
            return
        if run_step > 0 and run_step % self.cfg.train.eval_every == 0:
            return  # on an evaluation step its own line comes now
        done, took = step - self.first[0], now - self.first[1]
        if done < FIRST_LINE_STEPS and took < FIRST_LINE_SECONDS:
            return
        _write(self.first_line(step, total, done / max(took, 1e-9)))

    def _bar(self, step: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=step - 1, unit="step", dynamic_ncols=True,
                            file=sys.stderr)  # fmt: skip
        self.bar.update(step - self.bar.n)

    def log(self, _step: int, stats: dict[str, float]) -> None:
        """On every log line (the loop's `log` hook): the bar's postfix."""
        if self.bar is not None:
            self.bar.set_postfix(
                D=f"{stats.get(names.LOSS_D, float('nan')):.3f}",
                G=f"{stats.get(names.LOSS_G, float('nan')):.3f}",
                img_s=f"{stats.get(names.IMAGES_PER_SEC, 0.0):.0f}",
                val_err=self.val_err,
            )

    def note(self, line: str) -> None:
        """A line from the loop for a person (the loop's `note` hook): above the bar."""
        _write(f"amm: {line}")

    def close(self) -> None:
        """Training is over: the bar goes (the lines after it stand on their own)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def where(self, step: int, total: int) -> str:
        """A step of the loop's tick (the restart phase's steps counted) as a person reads it:
        'restart phase, start 2/3: step 500/1000' or 'step 1500/2500' (the run's own)."""
        t = self.cfg.train
        if t.restarts > 1 and step <= t.restarts * t.restart_steps:
            k = (step - 1) // t.restart_steps
            at = step - k * t.restart_steps
            return f"restart phase, start {k + 1}/{t.restarts}: step {at}/{t.restart_steps}"
        run_total = total - phase_steps(self.cfg)
        return f"step {step - phase_steps(self.cfg):>{len(str(run_total))}}/{run_total}"

    def first_line(self, step: int, total: int, rate: float) -> str:
        """'step 20/27500  1.95 steps/s  ETA 3h55m  (next evaluation at step 500)'."""
        self.spoke = True
        eta = (total - step) / rate if rate > 0 else 0.0
        budget = ""
        if self.cfg.train.max_minutes:
            left = max(0.0, 60 * self.cfg.train.max_minutes - (time.monotonic() - self.t0))
            if left < eta:
                eta, budget = (
                    left,
                    f" (time budget train.max_minutes={self.cfg.train.max_minutes:g})",
                )
        t, every = self.cfg.train, self.cfg.train.eval_every
        if t.restarts > 1 and step <= t.restarts * t.restart_steps:  # a start of the phase
            at = step - (step - 1) // t.restart_steps * t.restart_steps
            at_eval = min(t.restart_steps, (at // every + 1) * every)
            nxt = f"the start's next evaluation at step {at_eval}"
        else:
            at, end = step - phase_steps(self.cfg), total - phase_steps(self.cfg)
            nxt = f"next evaluation at step {min(end, (at // every + 1) * every)}"
        return (
            f"{self.where(step, total)}  {rate:.2f} steps/s  ETA {duration(eta)}{budget}  ({nxt})"
        )

    def eval_line(self, report: Report) -> str:
        step, total, m = report.step, report.total_steps, report.metrics
        done = step - self.step0
        elapsed = time.monotonic() - self.t0
        if self.first is not None and self.last is not None and self.last[2] > self.first[1]:
            # the steps' own rate: the restart phase's steps (before the run's first evaluation
            # lines) count too
            at, of, now = self.last
            eta = (of - at) * (now - self.first[1]) / max(at - self.first[0], 1)
        else:  # no step timed yet (a line without the loop's ticks)
            eta = (total - step) * elapsed / done if done > 0 and total > step else 0.0
        if self.cfg.train.max_minutes:  # a time budget may end the run first
            eta = min(eta, max(0.0, 60 * self.cfg.train.max_minutes - elapsed))
        parts = [f"step {step:>{len(str(total))}}/{total}" if total else f"step {step}"]
        for key, label in ((names.LOSS_D, "D"), (names.LOSS_G, "G")):
            if key in m:
                parts.append(f"{label} {m[key]:.3f}")
        if names.VAL_ERROR_GY in m:
            parts.append(f"val error {percent(m[names.VAL_ERROR_GY])}")
        if names.IMAGES_PER_SEC in m:
            parts.append(f"{m[names.IMAGES_PER_SEC]:,.0f} img/s")
        # the loop's last evaluation says why training ends (steps, time budget, plateau)
        ended = bool(report.stop_reason)
        parts.append(f"took {duration(elapsed)}" if ended else f"ETA {duration(eta)}")
        return "  ".join(parts)

    def __call__(self, report: Report, _ckpt: Path | None, final: bool) -> None:
        if final:
            return  # the CLI prints the summary
        if names.VAL_ERROR_GY in report.metrics:
            self.val_err = f"{100 * report.metrics[names.VAL_ERROR_GY]:.2f}%"
        if self.lines:
            _write(self.eval_line(report))
            self.spoke = True
        reason = report.stop_reason
        if reason and not self.done:  # the loop's last evaluation carries the reason, once
            self.done = True
            self.close()
            _write(done_line(report.step, reason, self.cfg))


def done_line(step: int, reason: str, cfg: Config) -> str:
    """'training done at step 125 (...): evaluating on the test set and writing figures ...'."""
    what = "evaluating on the test set"
    if cfg.train.figures:
        what += f" and writing figures (t-SNE of {cfg.train.tsne_points} points; seconds)"
    return f"training done at step {step} ({stop_words(reason, cfg)}): {what} ..."


def plan_line(cfg: Config, name: str) -> str:
    """The first lines of `amm train`, before anything slow: what will run, what the time budget
    covers, what is loading."""
    t = cfg.train
    steps = f"{total_steps(cfg):,} steps" if t.steps > 0 else f"{t.epochs:g} epochs"
    lines = [f"amm train: {name}, seed {cfg.seed}: {steps}"]
    if t.restarts > 1:
        lines[0] += (
            f" after a restart phase of {t.restarts} starts of {t.restart_steps:,} steps (the "
            "start of lowest clustering term goes on)"
        )
    if t.max_minutes:
        lines.append(
            f"time budget train.max_minutes={t.max_minutes:g}: training"
            + (", the restart phase included" if t.restarts > 1 else "")
            + "; the test evaluation and figures come after it"
        )
    lines.append(f"loading {cfg.data.dataset} and building the model ...")
    return "\n".join(lines)


def stop_words(reason: str, cfg: Config, signal: str = "") -> str:
    """The human words for a machine stop reason (names.STOP_*), naming the config key."""
    t = cfg.train
    if reason == names.STOP_STEPS:
        return f"train.steps={t.steps} done" if t.steps > 0 else f"train.epochs={t.epochs:g} done"
    if reason == names.STOP_TIME_BUDGET:
        return f"the time budget train.max_minutes={t.max_minutes:g} was spent"
    if reason == names.STOP_PLATEAU:
        return f"plateau stop: val error not improved for {t.stop_on_plateau} evaluations"
    if reason == names.STOP_SIGNAL:
        return f"signal {signal}".strip()
    return reason


def stop_line(reason: str, step: int, cfg: Config, signal: str = "") -> str:
    """Why training stopped, naming the config key: the console's last word on a run."""
    return f"stopped at step {step}: {stop_words(reason, cfg, signal)}"


def rounded(final: dict[str, Any], digits: int = 4) -> dict[str, Any]:
    """For the console: errors in percent under 'KEY (%)', other floats to `digits` significant
    digits (final.json keeps fractions at full precision)."""
    out: dict[str, Any] = {}
    for k, v in final.items():
        if names.is_error(k) and isinstance(v, int | float):
            out[f"{k} (%)"] = round(100 * v, 2)
        else:
            out[k] = float(f"{v:.{digits}g}") if isinstance(v, float) else v
    return out


def summary(final: dict[str, Any]) -> str:
    """One line a researcher reads: test errors in percent, NMI, ARI, clusters used."""
    parts = []
    if names.TEST_ERROR_GY in final:
        parts.append(f"test error {percent(final[names.TEST_ERROR_GY])}")
    if names.TEST_ERROR_BAYES in final:
        parts.append(f"(Bayes rule: {percent(final[names.TEST_ERROR_BAYES])})")
    for key, label in ((names.TEST_NMI, "NMI"), (names.TEST_ARI, "ARI")):
        if key in final:
            parts.append(f"{label} {final[key]:.3f}")
    if names.TEST_CLUSTERS_USED in final:
        parts.append(f"clusters used {final[names.TEST_CLUSTERS_USED]:g}")
    return "  ".join(parts)
