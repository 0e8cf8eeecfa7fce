"""What a run of a config costs on this machine, measured: one training step, one evaluation,
and the end of the run (test evaluation, its gen/* metrics, the figures), and from them the
seconds of a whole run, restart phase included (`trial_seconds`), or of its training at a
given speed within its time budget (`budgeted_seconds`). `amm sweep plan --measure` and
benchmarks/trial_cost.py use it (docs/performance.md).

The step is timed on random images of the dataset's shape (its cost does not depend on pixel
values); the evaluation and the end on the run's own splits (the evaluation classifier of the
gen/* metrics is trained once per dataset and cached, and that first training is not counted).
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from amm_core import settings
from amm_core.config import DATASET_SHAPES, Config, total_steps, trained_steps


@dataclass(frozen=True)
class RunCost:
    """Seconds of the parts of a run on one device, each the median of its timed rounds."""

    step_s: float  # one training step (D and G phases, penalty schedule, optimisers)
    eval_s: float  # one evaluation: validation metrics, latent diagnostics, gen/* metrics
    end_s: float  # test metrics, test gen/*, figures (when train.figures)


def evaluations(cfg: Config) -> int:
    """Evaluations a run of `cfg` makes, its restart phase's starts included."""
    t = cfg.train
    n = math.ceil(total_steps(cfg) / t.eval_every)
    if t.restarts > 1:  # every start evaluates its restart_steps; the kept one's are the run's
        n += (t.restarts - 1) * math.ceil(t.restart_steps / t.eval_every)
    return n


def trial_seconds(cfg: Config, cost: RunCost) -> float:
    """Seconds of a whole run (first start to final.json) at `cost`, without start-up."""
    return trained_steps(cfg) * cost.step_s + evaluations(cfg) * cost.eval_s + cost.end_s


def budget_s(cfg: Config) -> float:
    """The run's time budget in seconds (train.max_minutes); 0: none."""
    return 60 * cfg.train.max_minutes


def budgeted_seconds(cfg: Config, steps_per_sec: float) -> float:
    """Seconds of a run's training at `steps_per_sec`: its trained steps, at most its budget."""
    s = trained_steps(cfg) / steps_per_sec
    return min(s, budget_s(cfg)) if budget_s(cfg) else s


def _median_seconds(fn, rounds: int, reps: int = 1) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        times.append((time.perf_counter() - t0) / reps)
    return statistics.median(times)


def measure_step(cfg: Config, steps: int = 10, rounds: int = 3) -> float:
    """Seconds of one training step of `cfg` on its device (the median of `rounds` rounds of
    `steps` steps, after a warm-up that covers the penalty schedule)."""
    from amm_core.run.accel import keep_freed_memory
    from amm_core.run.step import TrainingStep
    from amm_core.run.train import resolve_device

    device = resolve_device(cfg.train.device)
    if device.type == "cpu":
        keep_freed_memory()
    torch.manual_seed(0)
    step_fn = TrainingStep(cfg, device)
    step_fn.model.train()
    shape = (cfg.train.batch_size, *DATASET_SHAPES[cfg.data.dataset])
    data = [torch.rand(shape, device=device).contiguous(memory_format=step_fn.fmt) for _ in "ab"]
    i = 0

    def some_steps() -> None:
        nonlocal i
        for _ in range(steps):
            step_fn(i, data[i % 2])
            i += 1
        if device.type == "cuda":
            torch.cuda.synchronize()

    every = cfg.loss.gp_every * getattr(cfg.loss, "extra_every", 1)  # older trees lack it
    for _ in range(every + 2):  # warm-up: allocator, oneDNN primitives, both schedules
        step_fn(i, data[i % 2])
        i += 1
    return _median_seconds(some_steps, rounds) / steps


def measure_evaluation(cfg: Config, rounds: int = 3) -> tuple[float, float]:
    """(seconds of one evaluation, seconds of the run's end) of an untrained model of `cfg` on
    its data (the cost of either does not depend on the weights)."""
    from amm_core import names
    from amm_core.data.splits import derive_seed, load_splits, to_float
    from amm_core.run.classifier import digit_classifier
    from amm_core.run.diagnostics import latent_diagnostics
    from amm_core.run.metrics import encode_split, evaluate, score
    from amm_core.run.step import TrainingStep
    from amm_core.run.train import _write_figures, resolve_device, split_gen_metrics

    device = resolve_device(cfg.train.device)
    root = settings.data_root(cfg.data.data_dir)
    splits = load_splits(cfg.data, root, cfg.seed, device)
    model = TrainingStep(cfg, device, splits.class_freqs, splits.train_x).model
    judge = digit_classifier(cfg.data.dataset, root, device) if cfg.train.gen_metrics else None
    n = splits.n_classes

    def gen(x: torch.Tensor, y: torch.Tensor) -> None:
        if judge is not None:
            split_gen_metrics(model, judge, x, y, cfg, n, derive_seed(cfg.seed, "cost"))

    def one_eval() -> None:
        evaluate(model, splits.val_x, splits.val_y, cfg, n)
        latent_diagnostics(model, to_float(splits.val_x[: cfg.train.batch_size]), seed=0)
        gen(splits.val_x, splits.val_y)

    def end() -> None:  # as a run's end: the test split encoded once, for scores and figures
        enc = encode_split(model, splits.test_x, cfg)
        score(enc, splits.test_y, cfg, n)
        gen(splits.test_x, splits.test_y)
        if cfg.train.figures:
            with tempfile.TemporaryDirectory() as d:
                (Path(d) / names.METRICS_FILE).write_text("")
                _write_figures(model, splits, Path(d) / names.FIGURES_DIR, cfg, enc)

    model.train()  # evaluate() switches to eval mode and back, as in a run
    one_eval()  # warm-up
    return _median_seconds(one_eval, rounds), _median_seconds(end, 1)


def measure(cfg: Config, steps: int = 10, rounds: int = 3) -> RunCost:
    """Measure a run of `cfg` here: its step, one evaluation and its end."""
    step_s = measure_step(cfg, steps, rounds)
    eval_s, end_s = measure_evaluation(cfg, rounds)
    return RunCost(step_s, eval_s, end_s)
