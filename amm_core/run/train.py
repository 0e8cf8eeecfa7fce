"""The training loop: steps (`amm_core.run.step`), evaluations, checkpoints, reports.

Everything about the method lives in `losses.py` / `models.py`; everything about Ray and MLflow
lives in `sweeps/`. The loop talks to the outside world through two hooks:
`report(metrics, checkpoint_dir, final)` after each evaluation (final=False) and once at the end
with the test metrics (final=True), `should_stop()`, and `tick(step, steps)` after every step
(the console's first line). `run` returns a `RunResult`.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from amm_core import names, settings
from amm_core.config import Config, total_steps
from amm_core.data.splits import EpochSampler, Splits, derive_seed, generator, load_splits, to_float
from amm_core.errors import ConfigError
from amm_core.fs import json_lines
from amm_core.model.models import AMM
from amm_core.run.accel import keep_freed_memory
from amm_core.run.checkpoint import (
    checkpoint_config,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    rng_state,
    save_checkpoint,
    set_rng_state,
    step_dir,
)
from amm_core.run.classifier import digit_classifier
from amm_core.run.diagnostics import generation_metrics, latent_diagnostics
from amm_core.run.metrics import Encoded, encode_split, evaluate, mapping_for, score
from amm_core.run.plateau import Plateau
from amm_core.run.step import Stats, TrainingStep

# report(metrics, checkpoint_dir, final): final is True once, on the test/* metrics at the end
ReportFn = Callable[[dict[str, Any], Path | None, bool], None]


@dataclass(frozen=True)
class RunResult:
    """What `run` returns, finished or stopped."""

    step: int  # the step training reached
    checkpoint: Path | None  # the newest checkpoint folder
    stopped: bool = False  # should_stop() ended the run: no test evaluation, `final` is empty
    # why training ended: names.STOP_STEPS, STOP_TIME_BUDGET or STOP_PLATEAU ("" when `stopped`)
    stop_reason: str = ""
    final: dict[str, Any] = field(default_factory=dict)  # final.json: test/* and bookkeeping


# Keys that may differ between a checkpoint and the run that resumes it: where things live and
# how long to train, not what is trained.
RESUMABLE_CHANGES = {
    "data.data_dir",
    "data.download",
    "train.device",
    "train.steps",
    "train.epochs",
    "train.max_minutes",
    "train.stop_on_plateau",
    "train.plateau_delta",
    # a start of the restart phase goes on as the run: it was trained without figures, for
    # restart_steps, as a run of its own (restarts 1); none of these changes what is trained
    "train.figures",
    "train.restarts",
    "train.restart_steps",
}


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


def _check_resumable(saved: Config, cfg: Config) -> None:
    a, b = saved.flat(), cfg.flat()
    diff = sorted(k for k in a if a[k] != b.get(k) and k not in RESUMABLE_CHANGES)
    if diff:
        detail = ", ".join(f"{k}: {a[k]!r} -> {b[k]!r}" for k in diff)
        keep = " ".join(f"--set {k}={json.dumps(a[k])}" for k in diff)
        raise ConfigError(
            f"cannot resume: the config differs from the checkpoint's ({detail}); to go on "
            f"with the checkpoint's values (e.g. after a default changed): {keep}"
        )


def _trim_metrics(path: Path, step: int) -> None:
    """On resume, drop metric lines written after the checkpoint (they will be written again)."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
    path.write_text("".join(ln + "\n" for ln in keep))


def _stream(cfg: Config, purpose: str) -> str:
    """The RNG stream of `purpose` for this run's start: start 0 is the seed's own streams, so a
    run without restarts draws what it always drew; the data split never depends on the start."""
    return purpose if cfg.train.start == 0 else f"{purpose}:start{cfg.train.start}"


def run(
    cfg: Config,
    out_dir: str | Path,
    *,
    report: ReportFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume_from: str | Path | None = None,
    progress: bool = False,
    tick: Callable[[int, int], None] | None = None,
    deadline: float | None = None,
    test: bool = True,
    final_extra: dict[str, Any] | None = None,
) -> RunResult:
    """Train one model; its final metrics (test/* plus bookkeeping) are `RunResult.final`.

    Writes out_dir/config.json, metrics.jsonl, final.json, checkpoints/step_*/state.pt and,
    when cfg.train.figures, figures/*.png. One start of the model (train.start): the restart
    phase of train.restarts > 1 is `amm_core.run.restarts.train`, which calls this. `deadline`
    (time.monotonic()) replaces train.max_minutes' own; test=False ends after the last
    evaluation (no test, no final.json); `final_extra` is bookkeeping added to final.json.
    """
    out_dir = Path(out_dir).resolve()
    ckpt_root = out_dir / names.CHECKPOINTS_DIR
    device = resolve_device(cfg.train.device)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True)

    # One seed; every RNG derives from it (data split and batch order have their own streams).
    random.seed(derive_seed(cfg.seed, _stream(cfg, "python")))
    torch.manual_seed(derive_seed(cfg.seed, _stream(cfg, "torch")))
    root = settings.data_root(cfg.data.data_dir)
    splits: Splits = load_splits(cfg.data, root, cfg.seed, device)
    n_train = len(splits.train_x)

    if device.type == "cpu":
        keep_freed_memory()
    step_fn = TrainingStep(cfg, device, splits.class_freqs, splits.train_x)
    model, opt_g, opt_d, fmt = step_fn.model, step_fn.opt_g, step_fn.opt_d, step_fn.fmt
    batches = generator(cfg.seed, _stream(cfg, "batches"))
    sampler = EpochSampler(n_train, cfg.train.batch_size, batches, device)
    lab_sampler = None
    if cfg.data.supervised:
        lab_idx, lab_g = splits.labelled_idx, generator(cfg.seed, _stream(cfg, "labelled_batches"))
        lab_bs = min(cfg.train.labelled_batch_size, len(lab_idx))
        lab_sampler = EpochSampler(len(lab_idx), lab_bs, lab_g, device, indices=lab_idx)
    steps = total_steps(cfg, n_train)
    step = 0
    plateau = Plateau(cfg.train.stop_on_plateau, cfg.train.plateau_delta)
    stop_reason = names.STOP_STEPS
    spent = 0.0  # seconds of training before this process (a resumed run's checkpoint says)

    if resume_from is not None:
        state = load_checkpoint(resume_from)
        _check_resumable(checkpoint_config(state), cfg)  # an older amm's may carry a removed key
        model.load_state_dict(state["model"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        for group in opt_g.param_groups + opt_d.param_groups:  # a GPU run may resume on a CPU
            group.update(step_fn.adam)  # saved with the checkpoint; a CPU cannot step it
        sampler.load_state_dict(state["sampler"])
        if lab_sampler is not None:
            lab_sampler.load_state_dict(state["lab_sampler"])
        set_rng_state(state["rng"])
        step = int(state["step"])
        spent = float(state.get("elapsed_s", 0.0))  # checkpoints of an older amm lack it
        _trim_metrics(out_dir / names.METRICS_FILE, step)
        if "plateau" in state:  # checkpoints from before the plateau stop lack it
            plateau.load_state_dict(state["plateau"])
        if plateau.done:  # saved by the evaluation that ended it: go straight to the test
            steps, stop_reason = step, names.STOP_PLATEAU

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / names.CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")

    def checkpoint() -> Path:
        state = {
            "step": step,
            "config": json.dumps(cfg.to_dict()),
            "config_hash": cfg.hash(),
            "model": model.state_dict(),
            "opt_g": opt_g.state_dict(),
            "opt_d": opt_d.state_dict(),
            "sampler": sampler.state_dict(),
            "lab_sampler": lab_sampler.state_dict() if lab_sampler is not None else {},
            "rng": rng_state(),
            "plateau": plateau.state_dict(),
            # the run's training time so far: a resumed run keeps what is left of max_minutes
            "elapsed_s": spent + time.perf_counter() - t_loop,
        }
        path = save_checkpoint(step_dir(ckpt_root, step), state)
        prune_checkpoints(ckpt_root, cfg.train.keep_checkpoints)
        return path.parent

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, initial=step, unit="step", dynamic_ncols=True, file=sys.stderr)

    judge = digit_classifier(cfg.data.dataset, root, device) if cfg.train.gen_metrics else None

    def gen_metrics(x: torch.Tensor, y: torch.Tensor, seed: int) -> dict[str, float]:
        if judge is None:
            return {}
        return split_gen_metrics(model, judge, x, y, cfg, splits.n_classes, seed)

    stats, last_train = Stats(), {}
    val_err = "-"  # the bar's postfix: validation error (%) of the last evaluation
    t_last, step_last = time.perf_counter(), step
    model.train()
    stopped = False
    t_loop = time.perf_counter()
    if deadline is None and cfg.train.max_minutes:  # what the run has left of its budget
        deadline = time.monotonic() + 60 * cfg.train.max_minutes - spent
    if resume_from is not None and deadline is not None and time.monotonic() > deadline:
        # resumed with the budget spent (the restart phase used it up): at an evaluated
        # checkpoint, not one step more (its evaluation was the last); else one step, evaluated
        history = json_lines(out_dir / names.METRICS_FILE)
        if history and history[-1][names.STEP] == step:
            steps, stop_reason = min(steps, step), names.STOP_TIME_BUDGET
    delay = settings.step_delay_s()  # a slower machine, simulated (tests)
    while step < steps:
        if should_stop is not None and should_stop():
            stopped = True
            break
        x = to_float(splits.train_x[next(sampler)]).contiguous(memory_format=fmt)
        x_l = y_l = None
        if lab_sampler is not None:
            lidx = next(lab_sampler)  # indices into the train split
            x_l = to_float(splits.train_x[lidx]).contiguous(memory_format=fmt)
            y_l = splits.train_y[lidx]

        stats.add(step_fn(step, x, x_l, y_l))
        step += 1
        if delay:
            time.sleep(delay)
        if tick is not None:
            tick(step, steps)
        if deadline is not None and time.monotonic() > deadline and step < steps:
            steps = step  # the time budget is spent: this step is the last (evaluated below)
            stop_reason = names.STOP_TIME_BUDGET

        is_eval = step % cfg.train.eval_every == 0 or step == steps
        if step % cfg.train.log_every == 0 or is_eval:
            now = time.perf_counter()
            last_train = stats.flush(step)
            last_train[names.IMAGES_PER_SEC] = (
                (step - step_last) * cfg.train.batch_size / max(now - t_last, 1e-9)
            )
            t_last, step_last = now, step
            if bar is not None:
                bar.set_postfix(
                    D=f"{last_train.get(names.LOSS_D, float('nan')):.3f}",
                    G=f"{last_train.get(names.LOSS_G, float('nan')):.3f}",
                    img_s=f"{last_train[names.IMAGES_PER_SEC]:.0f}",
                    val_err=val_err,
                )
        if bar is not None:
            bar.update(1)
        if is_eval:
            t_eval = time.perf_counter()
            val = evaluate(model, splits.val_x, splits.val_y, cfg, splits.n_classes)
            val_err = f"{100 * val[names.ERROR_GY]:.2f}%"
            metrics = {names.STEP: step, names.EPOCH: step * cfg.train.batch_size / n_train}
            metrics.update(last_train)
            metrics.update({names.split_metric("val", k): v for k, v in val.items()})
            diag_x = to_float(splits.val_x[: cfg.train.batch_size])
            diag_seed = derive_seed(cfg.seed, f"diag:{step}")
            metrics.update(latent_diagnostics(model, diag_x, seed=diag_seed))
            metrics.update(gen_metrics(splits.val_x, splits.val_y, diag_seed))
            if plateau.update(val[names.ERROR_GY]) and step < steps:  # before the checkpoint
                steps, stop_reason = step, names.STOP_PLATEAU
            if step == steps:  # the last evaluation says why training ends (the console tells)
                metrics[names.STOP_REASON] = stop_reason
            ckpt = checkpoint()
            metrics[names.EVAL_SECONDS] = time.perf_counter() - t_eval
            with open(out_dir / names.METRICS_FILE, "a") as f:
                f.write(json.dumps(metrics) + "\n")
            if report is not None:
                report(metrics, ckpt, False)
            t_last = time.perf_counter()  # evaluation time is not training throughput
    if bar is not None:
        bar.close()

    if stopped:
        return RunResult(step, checkpoint(), stopped=True)
    if not test:
        return RunResult(step, latest_checkpoint(ckpt_root), stop_reason=stop_reason)

    test_enc = encode_split(model, splits.test_x, cfg)  # the figures use it too
    scores = score(test_enc, splits.test_y, cfg, splits.n_classes)
    seconds = spent + time.perf_counter() - t_loop  # the whole run's, resumes included
    final: dict[str, Any] = {names.STEP: step, names.TRAIN_SECONDS: seconds}
    final.update({names.split_metric("test", k): v for k, v in scores.items()})
    gen = gen_metrics(splits.test_x, splits.test_y, gen_test_seed(cfg))
    final.update({names.split_metric("test", k): v for k, v in gen.items()})  # test/gen/...
    final[names.ERROR_MAPPING_TAG] = mapping_for(
        cfg.model.num_components, splits.n_classes, cfg.data.supervised
    )
    final[names.STOP_REASON] = stop_reason
    final.update(final_extra or {})
    (out_dir / names.FINAL_FILE).write_text(json.dumps(final, indent=2) + "\n")
    if cfg.train.figures:
        _write_figures(model, splits, out_dir / names.FIGURES_DIR, cfg, test_enc)
    ckpt = latest_checkpoint(ckpt_root)
    if report is not None:
        report(dict(final), ckpt, True)
    return RunResult(step, ckpt, final=final, stop_reason=stop_reason)


def _write_figures(model: AMM, splits: Splits, out: Path, cfg: Config, enc: Encoded) -> None:
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
        print(f"amm: warning: figures not written ({type(e).__name__}: {e})", file=sys.stderr)
