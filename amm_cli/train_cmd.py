"""`amm train CONFIG.yaml [key=value ...] [--set key=value ...] [--data-dir D] [--out DIR]`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from amm_cli.options import add_data_dir, add_set


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train one model (no Ray)",
        description="Train one AMM/SAMM model from a preset and overrides. Writes DIR/config.json, "
        "DIR/metrics.jsonl, DIR/final.json, DIR/checkpoints/ and DIR/figures/.",
    )
    p.add_argument("config", nargs="?", help="YAML preset, e.g. configs/mnist_amm.yaml")
    p.add_argument(
        "pairs",
        nargs="*",
        metavar="KEY=VALUE",
        help="overrides, as with --set: amm train CONFIG loss.gp_weight=10 seed=3",
    )
    add_set(p, "override a config key (dotted), e.g. --set loss.gp_weight=10; repeatable")
    add_data_dir(p)
    p.add_argument(
        "--download",
        action="store_true",
        help="fetch a missing dataset through torchvision into the data root "
        "(data.download=true; needs network)",
    )
    p.add_argument("--out", help="output folder (default: runs/train/<config>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar: one plain line per evaluation (the default without a terminal)",
    )
    p.add_argument("--help-config", action="store_true", help="list every config key and exit")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from amm_core.config import describe, load_config
    from amm_core.errors import ConfigError

    if args.help_config:
        print(describe())
        return 0
    pairs = list(args.pairs)
    if args.config and "=" in args.config and not Path(args.config).is_file():
        pairs.insert(0, args.config)  # `amm train key=value`: no preset given
        args.config = None
    if not args.config:
        raise ConfigError("missing CONFIG: give a YAML preset, e.g. configs/mnist_amm.yaml")
    for item in pairs:
        if "=" not in item:
            raise ConfigError(
                f"unexpected argument {item!r}: after CONFIG come overrides KEY=VALUE, "
                "e.g. loss.gp_weight=10 (or --set loss.gp_weight=10)"
            )
    from amm_core.presets import find_preset, presets_dir, shipped
    from sweeps.store.locations import resolve_data_root

    path = find_preset(args.config)
    if not path.is_file():
        raise ConfigError(
            f"config file '{args.config}' does not exist; shipped presets (by name): "
            f"{', '.join(shipped(presets_dir())) or 'none found'}"
        )
    from amm_cli.options import overrides

    # every flag is an override: --data-dir is data.data_dir (absolute), --download data.download
    flags = overrides(args) | ({"data.download": True} if args.download else {})
    cfg = load_config(path, pairs).replace(**flags)
    if not cfg.data.data_dir:  # $AMM_DATA_DIR, amm.toml's data_dir or ./data, as sweeps do
        cfg = cfg.replace(**{"data.data_dir": str(resolve_data_root(None))})

    from amm_core import names
    from amm_core.fs import check_out_dir

    if args.out:
        out = Path(args.out)
    else:
        if args.resume:
            raise ConfigError("--resume needs --out DIR: the folder of the run to continue")
        out = Path("runs/train") / f"{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    resume_from, ckpts = None, out / names.CHECKPOINTS_DIR
    in_phase = (out / names.STARTS_DIR).is_dir()  # stopped in the restart phase: no checkpoint
    if args.resume:
        from amm_core.run.checkpoint import latest_checkpoint

        resume_from = latest_checkpoint(ckpts)
        if resume_from is None and not in_phase:
            raise ConfigError(f"--resume: no checkpoint under '{ckpts}'")
    elif in_phase or ckpts.exists() and any(ckpts.iterdir()):
        # Never overwrite a run: the user either resumes it or picks a new folder.
        raise ConfigError(
            f"--out '{out}' already holds a run; use --resume to continue it or another --out"
        )
    check_out_dir(out, "--out")  # a file in the way or a read-only disk: now, not after the data
    from amm_cli.progress import TrainConsole, plan_line, rounded, stop_line, summary

    t_start = time.monotonic()
    # the first line, before torch and the data load (seconds on an idle machine, more on a busy
    # one): what runs, what the time budget covers, what is loading
    print(plan_line(cfg, Path(args.config).stem), file=sys.stderr, flush=True)
    from amm_core.run.restarts import train as run

    bar = not args.no_progress and sys.stderr.isatty()
    step0 = names.checkpoint_step(resume_from.name) if resume_from is not None else 0
    console = TrainConsole(cfg, lines=not bar, resumed_step=step0, bar=bar)
    from amm_core.signals import StopOnSignal

    def said(name: str) -> None:  # the first signal: the loop stops after its step, checkpointed
        print(f"amm: {name}: stopping after this step (again to interrupt now)", file=sys.stderr)

    with StopOnSignal(said) as signalled:
        try:
            result = run(
                cfg,
                out,
                report=console,
                should_stop=lambda: signalled.name,  # the signal's name once there was one
                resume_from=resume_from,
                tick=console.tick,
                log=console.log,
                note=console.note,
            )
        finally:
            console.close()
    from amm_core.fmt import duration

    if result.stopped:  # a signal: checkpoint saved, final.json says why, no test evaluation
        from amm_core.shell import amm

        print(stop_line(names.STOP_SIGNAL, result.step, cfg, result.signal), file=sys.stderr)
        again = " ".join(_quoted(args.argv))
        again = again if "--resume" in args.argv else f"{again} --resume"
        if not any(a == "--out" or a.startswith("--out=") for a in args.argv):
            again += f" --out {_quoted([str(out)])[0]}"
        print(f"checkpoint saved; continue with: {amm()} {again}", file=sys.stderr)
        return 130
    final = result.final
    print(f"final metrics (errors in percent; {out / names.FINAL_FILE} keeps fractions):")
    print(json.dumps(rounded(final), indent=2))
    print(summary(final))
    print(stop_line(result.stop_reason, result.step, cfg))
    print(f"took {duration(time.monotonic() - t_start)} in all; results: {out.resolve()}")
    return 0


def _quoted(argv: list[str]) -> list[str]:
    import shlex

    return [shlex.quote(a) for a in argv]
