"""The gen/* measures (docs/method.md section 8) of finished runs, recomputed from each run's
newest checkpoint on test images as the final evaluation computes them: for a run trained
before a measure existed (gen/within_diversity), or to re-check a run's final.json.

    AMM_DATA_DIR=../shared/data .venv/bin/python benchmarks/generation_check.py runs/train/RUN ...

Prints one JSON line per run: {"run", "step", "gen/sample_diversity", ...}. A check to run, not
a test: it asserts nothing. docs/results.md quotes it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def check(run: Path, data_root: Path) -> dict:
    import torch

    from amm_core import names
    from amm_core.data.splits import load_splits
    from amm_core.run.checkpoint import checkpoint_config, latest_checkpoint, load_checkpoint
    from amm_core.run.classifier import digit_classifier
    from amm_core.run.step import TrainingStep
    from amm_core.run.train import gen_test_seed, split_gen_metrics

    newest = latest_checkpoint(run / names.CHECKPOINTS_DIR)
    if newest is None:
        print(f"no checkpoint under '{run / names.CHECKPOINTS_DIR}'", file=sys.stderr)
        raise SystemExit(2)
    state = load_checkpoint(newest)
    cfg = checkpoint_config(state).replace(**{"data.data_dir": str(data_root)})
    cpu = torch.device("cpu")
    splits = load_splits(cfg.data, data_root, cfg.seed, cpu)
    model = TrainingStep(cfg, cpu, splits.class_freqs, splits.train_x).model
    model.load_state_dict(state["model"])
    judge = digit_classifier(cfg.data.dataset, data_root, cpu)
    with torch.no_grad():
        m = split_gen_metrics(
            model, judge, splits.test_x, splits.test_y, cfg, splits.n_classes, gen_test_seed(cfg)
        )
    return {"run": str(run), "step": int(state["step"]), **{k: round(v, 4) for k, v in m.items()}}


def main() -> None:
    from sweeps.store.locations import resolve_data_root

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "runs", nargs="+", type=Path, help="run folders (amm train --out, a trial's run/)"
    )
    p.add_argument("--data-dir", help="data root (default: $AMM_DATA_DIR, amm.toml or ./data)")
    args = p.parse_args()
    root = resolve_data_root(args.data_dir)
    for run in args.runs:
        print(json.dumps(check(run, root)), flush=True)


if __name__ == "__main__":
    main()
