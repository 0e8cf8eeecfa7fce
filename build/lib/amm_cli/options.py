"""Options that several subcommands share, defined once: `--set` and `--data-dir`."""

from __future__ import annotations

import argparse
from pathlib import Path

DATA_DIR_DEFAULT = "(default: data.data_dir, $AMM_DATA_DIR, amm.toml's data_dir, else ./data)"


def add_set(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=help)


def add_data_dir(p: argparse.ArgumentParser, what: str = "data root") -> None:
    p.add_argument("--data-dir", help=f"{what} {DATA_DIR_DEFAULT}")


def overrides(args: argparse.Namespace) -> dict:
    """--set KEY=VALUE items, plus --data-dir as data.data_dir (absolute: trials run elsewhere)."""
    from amm_core.loader import parse_override

    out = dict(parse_override(i) for i in args.set)
    if args.data_dir:
        out["data.data_dir"] = str(Path(args.data_dir).expanduser().resolve())
    return out
