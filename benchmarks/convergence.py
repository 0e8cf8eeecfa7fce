"""Validation error over wall-clock time: does a preset reach its target within a budget?

    .venv/bin/python benchmarks/convergence.py --config configs/mnist_amm_plus.yaml \
        --minutes 120 --seeds 0 1 2 --parallel 2 --out runs/convergence

Trains each seed for `--minutes` (train.max_minutes), on `--threads` torch threads per seed,
`--parallel` seeds at a time (separate processes), and prints one JSON line per evaluation:
{"seed", "minutes", "step", "epoch", "val/error_gy", ..., "gen/component_purity", ...} and one
per finished seed with its test metrics, both with the generation and latent measures. A
benchmark to run, not a test: it asserts nothing. docs/performance.md quotes it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

KEEP = ("step", "epoch", "val/error_gy", "val/error_bayes", "val/nmi", "val/clusters_used")


def _one(args: tuple[str, list[str], int, float, int, str]) -> None:
    config, overrides, seed, minutes, threads, out = args
    import torch

    from amm_core import names
    from amm_core.config import load_config
    from amm_core.run.restarts import train as run

    torch.set_num_threads(threads)
    cfg = load_config(config, [*overrides, f"seed={seed}", f"train.max_minutes={minutes}"])
    t0 = time.monotonic()

    def report(r, _ckpt, final: bool) -> None:  # an amm_core.run.report.Report
        metrics = r.line()
        row = {"seed": seed, "minutes": round((time.monotonic() - t0) / 60, 2)}
        keep = names.FINAL_METRICS if final else KEEP
        # beside the error: what tells a working mixture from a collapsed one (docs/method.md 8)
        mixture = (*names.GEN_METRICS, names.DIAG_Z_TO_MEAN, names.DIAG_CENTROID_OFFSET)
        row.update({k: metrics[k] for k in (*keep, *mixture) if k in metrics})
        print(json.dumps(row), flush=True)

    run(cfg, Path(out) / f"seed{seed}", report=report)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/mnist_amm_plus.yaml")
    ap.add_argument("--minutes", type=float, default=120.0, help="training budget per seed")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--parallel", type=int, default=1, help="seeds trained at once")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per seed")
    ap.add_argument("--out", default="runs/convergence")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    jobs = [
        (args.config, args.overrides, s, args.minutes, args.threads, args.out) for s in args.seeds
    ]
    print(json.dumps({"config": args.config, "overrides": args.overrides, "argv": sys.argv[1:]}))
    if args.parallel <= 1:
        for j in jobs:
            _one(j)
        return
    with mp.get_context("spawn").Pool(args.parallel) as pool:
        pool.map(_one, jobs, chunksize=1)


if __name__ == "__main__":
    main()
