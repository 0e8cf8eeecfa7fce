"""`amm train CONFIG.yaml [--set key=value ...] [--data-dir D] [--out DIR] [--resume]`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train one model (no Ray)",
        description="Train one AMM/SAMM model from a preset and overrides. Writes DIR/config.json, "
        "DIR/metrics.jsonl, DIR/final.json, DIR/checkpoints/ and DIR/figures/.",
    )
    p.add_argument("config", nargs="?", help="YAML preset, e.g. configs/mnist_amm.yaml")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (dotted), e.g. --set loss.gp_weight=10; repeatable",
    )
    p.add_argument("--data-dir", help="data root (default: $AMM_DATA_DIR, else ./data)")
    p.add_argument(
        "--download",
        action="store_true",
        help="fetch a missing dataset through torchvision into the data root "
        "(data.download=true; needs network)",
    )
    p.add_argument("--out", help="output folder (default: runs/train/<config>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--help-config", action="store_true", help="list every config key and exit")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from amm_core.config import describe, load_config
    from amm_core.errors import ConfigError

    if args.help_config:
        print(describe())
        return 0
    if not args.config:
        raise ConfigError("missing CONFIG: give a YAML preset, e.g. configs/mnist_amm.yaml")
    cfg = load_config(args.config, args.overrides)
    if args.download:
        cfg = cfg.replace(**{"data.download": True})

    from amm_core.checkpoint import latest_checkpoint
    from amm_core.fs import check_out_dir
    from amm_core.train import run

    if args.out:
        out = Path(args.out)
    else:
        if args.resume:
            raise ConfigError("--resume needs --out DIR: the folder of the run to continue")
        out = Path("runs/train") / f"{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    resume_from = None
    if args.resume:
        resume_from = latest_checkpoint(out / "checkpoints")
        if resume_from is None:
            raise ConfigError(f"--resume: no checkpoint under '{out / 'checkpoints'}'")
    elif (out / "checkpoints").exists() and any((out / "checkpoints").iterdir()):
        # Never overwrite a run: the user either resumes it or picks a new folder.
        raise ConfigError(
            f"--out '{out}' already holds a run; use --resume to continue it or another --out"
        )
    check_out_dir(out, "--out")  # a file in the way or a read-only disk: now, not after the data
    final = run(
        cfg,
        out,
        resume_from=resume_from,
        data_root=args.data_dir,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    print(json.dumps(final, indent=2))
    print(f"results: {out.resolve()}")
    return 0
