"""`amm data get [DATASET] [--data-dir D] [--mirror URL]`: fetch a dataset into the data root."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="fetch MNIST / Fashion-MNIST into the data root",
        description="Download a dataset's missing files (torchvision's mirrors, MD5 checksums "
        "verified) into <data root>/<dataset>/. Nothing happens when the files are there.",
    )
    sub2 = p.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    g = sub2.add_parser("get", help="download a dataset when it is missing")
    g.add_argument(
        "dataset", nargs="?", default="mnist", choices=("mnist", "fashion_mnist"), help="(mnist)"
    )
    g.add_argument("--data-dir", help="data root (default: $AMM_DATA_DIR, amm.toml's, ./data)")
    g.add_argument("--mirror", help="a mirror URL to use instead (default: $AMM_DATA_MIRROR)")
    g.set_defaults(func=_get)


def _get(args: argparse.Namespace) -> int:
    from amm_core.data.download import fetch
    from sweeps.store.locations import resolve_data_root

    root = resolve_data_root(args.data_dir)
    folder = fetch(args.dataset, root, args.mirror)
    print(f"{args.dataset}: {folder}")
    return 0
