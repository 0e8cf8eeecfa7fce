"""The training loop: `fit` (steps, evaluations, checkpoints, reports), then `run`'s end (the
test metrics, final.json, figures).

Networks, loss and loop apart, as in stylegan2-ada: everything about the method lives in
`model/`; the step in `run/step.py`; the full state a checkpoint holds in `run/state.py`; why
training ends in `run/stop.py`; everything about Ray, MLflow and the console outside. The loop
talks to the outside world through hooks only: `tick(step, steps)` after every step,
`log(step, stats)` on every log line (the training losses and images/s), `report(report,
checkpoint_dir, final)` after each evaluation (final=False) and once at the end with the test
metrics (final=True), and `should_stop()` before every step. `run` returns a `RunResult`.
"""

from __future__ import annotations

import functools
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from amm_core import names, settings
from amm_core.config import Config, total_steps
from amm_core.data.splits import Splits, derive_seed, load_splits, to_float
from amm_core.errors import ConfigError
from amm_core.fs import json_lines
from amm_core.model.models import AMM
from amm_core.run.accel import keep_freed_memory
from amm_core.run.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    step_dir,
)
from amm_core.run.classifier import digit_classifier
from amm_core.run.diagnostics import generation_metrics, latent_diagnostics
from amm_core.run.metrics import Encoded, encode_split, evaluate, mapping_for, score
from amm_core.run.report import Report, ReportFn
from amm_core.run.state import TrainingState, stream
from amm_core.run.step import Stats, TrainingStep
from amm_core.run.stop import stop_reason

Tick = Callable[[int, int], None]  # tick(step, steps): after every step
LogFn = Callable[[int, dict[str, float]], None]  # log(step, stats): every log line
NoteFn = Callable[[str], None]  # note(text): a line for a person (the restart phase, a warning)
StopFn = Callable[[], bool | str]  # truthy asks for a stop; a string names the signal


@dataclass(frozen=True)
class RunResult:
    """What `run` returns, finished or stopped."""

    step: int  # the step training reached
    checkpoint: Path | None  # the newest checkpoint folder
    stopped: bool = False  # should_stop() ended the run: no test evaluation, `final` is empty
    stop_reason: str = ""  # why training ended: names.STOP_*
    final: dict[str, Any] = field(default_factory=dict)  # final.json: test/* and bookkeeping
    signal: str = ""  # the name should_stop() gave (SIGINT, SIGTERM) when `stopped`


@dataclass(frozen=True)
class Fitted:
    """What `fit` leaves for the run's end: the trained state and why training ended."""

    out_dir: Path
    state: TrainingState
    splits: Splits
    judge: torch.nn.Module | None  # the evaluation classifier of gen/* (train.gen_metrics)
    steps: int  # the run's planned steps
    reason: str  # why training ended: names.STOP_*
    signal: str = ""  # the name should_stop() gave, when it ended training

    @property
    def checkpoint(self) -> Path | None:
        """The newest checkpoint folder."""
        return latest_checkpoint(self.out_dir / names.CHECKPOINTS_DIR)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"key 'train.device': {name!r} requested but CUDA is not available")
    return torch.device(name)


def split_gen_metrics(
    model: AMM,
    judge: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: Config,
    n_classes: int,
    seed: int,
) -> dict[str, float]:
    """gen/* on a split's first images (uint8 x), as every evaluation and the test compute them."""
    n = min(500, cfg.train.eval_batch_size)  # enough for shares to 0.02; cheap per evaluation
    return generation_metrics(
        model, judge, to_float(x[:n]), y[:n], n_classes, seed=seed, per_component=50
    )


def gen_test_seed(cfg: Config) -> int:
    """The seed of the test set's gen/* samples (final.json's test/gen/*)."""
    return derive_seed(cfg.seed, "gen:test")


def write_final(out_dir: Path, report: Report) -> None:
    """out_dir/final.json: the run's end (`Report.line()`), written by the loop only (and for a
    stop inside the restart phase by `amm_core.run.restarts`, which has no loop of its own)."""
    (out_dir / names.FINAL_FILE).write_text(json.dumps(report.line(), indent=2) + "\n")


def signal_report(step: int, total: int, signal: str) -> Report:
    """final.json of a run stopped by should_stop(): the step, why, which signal."""
    info = {names.STOP_REASON: names.STOP_SIGNAL, names.SIGNAL_NAME: signal}
    return Report(step, total, {}, info)


def _trim_metrics(path: Path, step: int) -> None:
    """On resume, drop metric lines written after the checkpoint (they will be written again)."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
    path.write_text("".join(ln + "\n" for ln in keep))


def _deterministic_if_asked(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn(cfg, ...)` under torch's deterministic algorithms when cfg.train.deterministic, the
    switch back as it was afterwards, whatever happened."""

    @functools.wraps(fn)
    def wrapped(cfg: Config, *args: Any, **kwargs: Any) -> Any:
        was = torch.are_deterministic_algorithms_enabled()
        warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
        try:
            if cfg.train.deterministic:
                torch.use_deterministic_algorithms(True)
            return fn(cfg, *args, **kwargs)
        finally:
            torch.use_deterministic_algorithms(was, warn_only=warn_only)

    return wrapped


@_deterministic_if_asked
def run(
    cfg: Config,
    out_dir: str | Path,
    *,
    start: int = 0,
    report: ReportFn | None = None,
    should_stop: StopFn | None = None,
    resume_from: str | Path | None = None,
    tick: Tick | None = None,
    log: LogFn | None = None,
    note: NoteFn | None = None,
    extra_metrics: dict[str, float] | None = None,
    extra_info: dict[str, str] | None = None,
) -> RunResult:
    """Train one model (`fit`), then test it; its final metrics (test/* plus bookkeeping) are
    `RunResult.final`, `extra_metrics` / `extra_info` bookkeeping added to them.

    Writes out_dir/config.json, metrics.jsonl, final.json, checkpoints/step_*/state.pt and,
    when cfg.train.figures, figures/*.png. `start` and the hooks: as `fit`'s. The restart phase
    of train.restarts > 1 is `amm_core.run.restarts.train`, which fits each start and runs the
    one it keeps.
    """
    fitted = fit(cfg, out_dir, start=start, report=report, should_stop=should_stop,
                 resume_from=resume_from, tick=tick, log=log, note=note)  # fmt: skip
    return _finish(fitted, report, note, extra_metrics or {}, extra_info or {})


@_deterministic_if_asked
def fit(
    cfg: Config,
    out_dir: str | Path,
    *,
    start: int = 0,
    report: ReportFn | None = None,
    should_stop: StopFn | None = None,
    resume_from: str | Path | None = None,
    tick: Tick | None = None,
    log: LogFn | None = None,
    note: NoteFn | None = None,
) -> Fitted:
    """Train one model to the end of its steps, time budget (train.max_minutes, counting the
    checkpoint's training seconds too) or plateau, or until `should_stop`: steps, evaluations
    (metrics.jsonl, `report`), checkpoints. No test set, no final.json: `run` ends it.

    `start` picks the streams of its weights and batches (a start of the restart phase; a
    resumed run's checkpoint says which)."""
    out_dir = Path(out_dir).resolve()
    ckpt_root = out_dir / names.CHECKPOINTS_DIR
    device = resolve_device(cfg.train.device)
    # One seed; every RNG derives from it (data split and batch order have their own streams).
    random.seed(derive_seed(cfg.seed, stream(start, "python")))
    torch.manual_seed(derive_seed(cfg.seed, stream(start, "torch")))
    root = settings.data_root(cfg.data.data_dir)
    splits: Splits = load_splits(cfg.data, root, cfg.seed, device)
    n_train = len(splits.train_x)
    if device.type == "cpu":
        keep_freed_memory()
    step_fn = TrainingStep(cfg, device, splits.class_freqs, splits.train_x)
    state = TrainingState.build(cfg, step_fn, splits, device, start)
    model, fmt, steps = state.model, step_fn.fmt, total_steps(cfg, n_train)
    evaluated = False  # the checkpoint resumed from is an evaluation's
    if resume_from is not None:
        state.load_state_dict(load_checkpoint(resume_from))
        _trim_metrics(out_dir / names.METRICS_FILE, state.step)
        history = json_lines(out_dir / names.METRICS_FILE)
        evaluated = bool(history) and history[-1][names.STEP] == state.step
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / names.CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")

    def checkpoint() -> Path:
        path = save_checkpoint(step_dir(ckpt_root, state.step), state.state_dict())
        prune_checkpoints(ckpt_root, cfg.train.keep_checkpoints)
        return path.parent

    judge = digit_classifier(cfg.data.dataset, root, device) if cfg.train.gen_metrics else None
    gen_metrics = functools.partial(_gen_metrics, model, judge, cfg, splits.n_classes)

    stats, last_train = Stats(), {}
    t_last, step_last = time.perf_counter(), state.step
    model.train()
    state.start_clock()
    deadline = None  # what the run has left of its budget
    if cfg.train.max_minutes:
        deadline = time.monotonic() + 60 * cfg.train.max_minutes - state.spent_s
    # resumed at an evaluation that ended training (plateau; the budget spent, e.g. by the
    # restart phase): not one step more; from another checkpoint at least one step, evaluated
    reason = stop_reason(state.step, steps, plateau=state.plateau,
                         deadline=deadline if evaluated else None)  # fmt: skip
    delay = settings.step_delay_s()  # a slower machine, simulated (tests)
    signal: bool | str = False
    while not reason:
        signal = should_stop() if should_stop is not None else False
        if reason := stop_reason(state.step, steps, asked=bool(signal)):
            break
        x = to_float(splits.train_x[next(state.sampler)]).contiguous(memory_format=fmt)
        x_l = y_l = None
        if state.lab_sampler is not None:
            lidx = next(state.lab_sampler)  # indices into the train split
            x_l = to_float(splits.train_x[lidx]).contiguous(memory_format=fmt)
            y_l = splits.train_y[lidx]

        stats.add(step_fn(state.step, x, x_l, y_l))
        state.step += 1
        step = state.step
        if delay:
            time.sleep(delay)
        if tick is not None:
            tick(step, steps)
        reason = stop_reason(step, steps, deadline=deadline)  # then this step is the last
        is_eval = step % cfg.train.eval_every == 0 or bool(reason)
        if step % cfg.train.log_every == 0 or is_eval:
            now = time.perf_counter()
            last_train = stats.flush(step)
            last_train[names.IMAGES_PER_SEC] = (
                (step - step_last) * cfg.train.batch_size / max(now - t_last, 1e-9)
            )
            t_last, step_last = now, step
            if log is not None:
                log(step, dict(last_train))
        if is_eval:
            t_eval = time.perf_counter()
            metrics = {names.EPOCH: step * cfg.train.batch_size / n_train, **last_train}
            metrics.update(_validation(model, splits, cfg, step, gen_metrics))
            state.plateau.update(metrics[names.VAL_ERROR_GY])  # the checkpoint keeps it
            reason = reason or stop_reason(step, steps, plateau=state.plateau)
            ckpt = checkpoint()
            metrics[names.EVAL_SECONDS] = time.perf_counter() - t_eval
            # the last evaluation says why training ends (the console tells)
            ev = Report(step, steps, metrics, {names.STOP_REASON: reason} if reason else {})
            with open(out_dir / names.METRICS_FILE, "a") as f:
                f.write(json.dumps(ev.line()) + "\n")
            if report is not None:
                report(ev, ckpt, False)
            t_last = time.perf_counter()  # evaluation time is not training throughput

    name = signal if isinstance(signal, str) else ""
    if reason == names.STOP_SIGNAL:  # a checkpoint at the step reached
        checkpoint()
    return Fitted(out_dir, state, splits, judge, steps, reason, name)


def _gen_metrics(
    model: AMM, judge: torch.nn.Module | None, cfg: Config, n_classes: int,
    x: torch.Tensor, y: torch.Tensor, seed: int,
) -> dict[str, float]:  # fmt: skip
    return {} if judge is None else split_gen_metrics(model, judge, x, y, cfg, n_classes, seed)


def _finish(
    fitted: Fitted,
    report: ReportFn | None,
    note: NoteFn | None,
    extra_metrics: dict[str, float],
    extra_info: dict[str, str],
) -> RunResult:
    """The run's end: the test metrics, final.json, the figures, the final report; a run
    stopped by should_stop(): its final.json says so, no test."""
    out_dir, state, splits, cfg = fitted.out_dir, fitted.state, fitted.splits, fitted.state.cfg
    model, steps, reason, ckpt = state.model, fitted.steps, fitted.reason, fitted.checkpoint
    if reason == names.STOP_SIGNAL:
        write_final(out_dir, signal_report(state.step, steps, fitted.signal))
        return RunResult(state.step, ckpt, True, reason, signal=fitted.signal)

    test_enc = encode_split(model, splits.test_x, cfg)  # the figures use it too
    scores = score(test_enc, splits.test_y, cfg, splits.n_classes)
    metrics = {names.TRAIN_SECONDS: state.elapsed()}  # the whole run's, resumes included
    metrics.update({names.split_metric("test", k): v for k, v in scores.items()})
    gen = _gen_metrics(model, fitted.judge, cfg, splits.n_classes, splits.test_x,
                       splits.test_y, gen_test_seed(cfg))  # fmt: skip
    metrics.update({names.split_metric("test", k): v for k, v in gen.items()})  # test/gen/...
    mapping = mapping_for(cfg.model.num_components, splits.n_classes, cfg.data.supervised)
    info = {names.ERROR_MAPPING_TAG: mapping, names.STOP_REASON: reason, **extra_info}
    final = Report(state.step, steps, {**metrics, **extra_metrics}, info)
    write_final(out_dir, final)
    if cfg.train.figures:
        _write_figures(model, splits, out_dir / names.FIGURES_DIR, cfg, test_enc, note)
    if report is not None:
        report(final, ckpt, True)
    return RunResult(state.step, ckpt, final=final.line(), stop_reason=reason)


def _validation(
    model: AMM, splits: Splits, cfg: Config, step: int, gen_metrics: Callable[..., dict]
) -> dict[str, float]:
    """An evaluation's val/*, diag/* and gen/* (the latter two on their own seed per step)."""
    val = evaluate(model, splits.val_x, splits.val_y, cfg, splits.n_classes)
    out = {names.split_metric("val", k): v for k, v in val.items()}
    diag_x = to_float(splits.val_x[: cfg.train.batch_size])
    diag_seed = derive_seed(cfg.seed, f"diag:{step}")
    out.update(latent_diagnostics(model, diag_x, seed=diag_seed))
    out.update(gen_metrics(splits.val_x, splits.val_y, diag_seed))
    return out


def _write_figures(
    model: AMM, splits: Splits, out: Path, cfg: Config, enc: Encoded, note: NoteFn | None = None
) -> None:
    """Figures are a by-product: a plotting failure is reported, and the run still counts."""
    try:
        from amm_core.run.figures import write_run_figures

        history = json_lines(out.parent / names.METRICS_FILE)
        write_run_figures(
            model,
            splits,
            out,
            cfg,
            max_points=cfg.train.tsne_points,
            history=history,
            encoded=enc,
        )
    except Exception as e:  # noqa: BLE001 - any plotting error must not fail a finished run
        if note is not None:
            note(f"warning: figures not written ({type(e).__name__}: {e})")
