"""Where a training step of a preset goes: its phases (forward tuples, D main, penalty, D's
Adam, generator phase, G's Adam), timed one by one, and each extra generator term's cost, as
the difference between the step with and without it (the variants' rounds alternate).

    .venv/bin/python benchmarks/step_breakdown.py --config configs/mnist_amm_mixture.yaml

1 thread, random images of the dataset's shape, no data set needed. A benchmark to run on an
idle machine, not a test; it asserts nothing (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from amm_core.config import DATASET_SHAPES, load_config
from amm_core.run.accel import autocast, keep_freed_memory
from amm_core.run.step import TrainingStep, extra_gain, penalty_gains

# each extra term and the config that turns it off
TERMS = {
    "x-cycle (recon)": ["loss.recon_weight=0"],
    "y- and z-cycles (info, latent)": ["loss.info_weight=0", "loss.latent_weight=0"],
    "centroid": ["loss.centroid_weight=0"],
    "eq. 18 term (bayes)": ["loss.bayes_weight=0"],
    "clustering with augmentation": ["loss.cluster_weight=0", "train.restarts=1"],
}


def _build(config: str, overrides: list[str]) -> tuple[TrainingStep, list[torch.Tensor]]:
    torch.manual_seed(0)
    step = TrainingStep(load_config(config, overrides), torch.device("cpu"))
    step.model.train()
    shape = (step.cfg.train.batch_size, *DATASET_SHAPES[step.cfg.data.dataset])
    data = [torch.rand(shape).contiguous(memory_format=step.fmt) for _ in range(4)]
    for i in range(4):  # warm-up
        step(i, data[i % 4])
    return step, data


def phases(step: TrainingStep, data: list[torch.Tensor], steps: int) -> dict[str, float]:
    """Milliseconds per training step of each phase (training_step's order, timed apart)."""
    s, loss, cfg = step, step.loss, step.cfg
    t = {k: 0.0 for k in ("tuples", "D main", "penalty", "D Adam", "G phase", "G Adam")}

    def timed(key: str, fn):
        t0 = time.perf_counter()
        out = fn()
        t[key] += time.perf_counter() - t0
        return out

    for i in range(steps):
        x = data[i % 4]
        with autocast(cfg, s.device):
            for gain in penalty_gains(cfg, i):
                s.opt_d.zero_grad(set_to_none=True)
                tup = timed("tuples", lambda x=x: loss.tuples(x))
                timed("D main", lambda tup=tup: loss.d_main(tup))
                if gain:
                    timed("penalty", lambda tup=tup, g=gain: loss.d_gp(tup, g))
                timed("D Adam", s.opt_d.step)
            s.opt_g.zero_grad(set_to_none=True)
            gain = extra_gain(cfg, i)
            timed("G phase", lambda tup=tup, gain=gain: loss.g_main(tup, gain))
            timed("G Adam", s.opt_g.step)
    return {k: round(1000 * v / steps, 1) for k, v in t.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/mnist_amm_mixture.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    keep_freed_memory()
    base = load_config(args.config, args.overrides)
    variants = {"full step": []}
    for name, off in TERMS.items():
        key = off[0].split("=")[0]
        if getattr(base.loss, key.split(".")[1]) > 0:
            variants[f"without {name}"] = off
    built = {n: _build(args.config, [*args.overrides, *o]) for n, o in variants.items()}
    ms: dict[str, list[float]] = {n: [] for n in variants}
    for _ in range(args.rounds):
        for n, (step, data) in built.items():
            t0 = time.perf_counter()
            for i in range(args.steps):
                step(i, data[i % 4])
            ms[n].append(1000 * (time.perf_counter() - t0) / args.steps)
    full = statistics.median(ms["full step"])
    print(
        json.dumps({"full step ms": round(full, 1), "rounds": [round(v) for v in ms["full step"]]})
    )
    for n in variants:
        if n != "full step":
            cost = full - statistics.median(ms[n])
            print(json.dumps({"term": n.removeprefix("without "), "ms": round(cost, 1)}))
    step, data = built["full step"]
    print(json.dumps({"phases ms": phases(step, data, args.steps)}))
    c = base
    print(
        f"config={args.config} amp={c.train.amp} gp_every={c.loss.gp_every} "
        f"extra_every={c.loss.extra_every} steps={args.steps} rounds={args.rounds} threads=1 "
        f"torch={torch.__version__}"
    )


if __name__ == "__main__":
    main()
