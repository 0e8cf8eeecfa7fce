"""`amm data get [DATASET] [--data-dir D] [--mirror URL]`: fetch a dataset into the data root."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="fetch MNIST / Fashion-MNIST into the data root",
        description="Download a dataset's missing files (torchvision's mirrors, MD5 checksums "
        "verified) into <data root>/<dataset>/ and train its evaluation classifier once (the "
        "gen/* metrics; cached). Nothing happens when both are there.",
    )
    sub2 = p.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    g = sub2.add_parser("get", help="download a dataset when it is missing")
    g.add_argument(
        "dataset", nargs="?", default="mnist", choices=("mnist", "fashion_mnist"), help="(mnist)"
    )
    g.add_argument("--data-dir", help="data root (default: $AMM_DATA_DIR, amm.toml's, ./data)")
    g.add_argument("--mirror", help="a mirror URL to use instead (default: $AMM_DATA_MIRROR)")
    g.add_argument(
        "--no-classifier",
        action="store_true",
        help="do not train the evaluation classifier now (the first run would, for its gen/* "
        "metrics; it is cached per dataset)",
    )
    g.set_defaults(func=_get)


def _get(args: argparse.Namespace) -> int:
    import sys

    from amm_core.data.download import fetch
    from sweeps.store.locations import resolve_data_root

    root = resolve_data_root(args.data_dir)
    folder = fetch(args.dataset, root, args.mirror)
    print(f"{args.dataset}: {folder}")
    if not args.no_classifier:
        import torch

        from amm_core.run.classifier import cache_file, digit_classifier

        path = cache_file(args.dataset, root)
        if not path.is_file():  # once here, not in every trial of the first sweep at once
            print(
                f"amm: training the evaluation classifier of {args.dataset} once (the gen/* "
                f"metrics; about 20 s), cached in {path.parent}",
                file=sys.stderr,
                flush=True,
            )
            digit_classifier(args.dataset, root, torch.device("cpu"))
        print(f"{args.dataset} evaluation classifier: {path}")
    return 0
