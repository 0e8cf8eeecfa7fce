"""The `amm` command: `amm train`, `amm data get`, `amm sweep plan|run|resume|status`,
`amm table`, `amm report`.

Each area registers its own subcommands (`register(subparsers)`), and each subcommand's handler
imports its heavy dependencies (torch, ray, mlflow) lazily, so `amm --help` stays fast.
`main` maps errors to exit codes for every subcommand: 0 success, 1 training or run failure,
2 bad config or input, 3 environment failure (disk full, read-only or unwritable folder),
4 tracking outage (sweep stopped; resume it), 130 interrupted. See docs/reliability.md.
"""

from __future__ import annotations

import argparse
import sys

from amm_core.errors import (
    CheckpointError,
    ConfigError,
    EnvironmentFailure,
    TrackingOutage,
    TrainingError,
)
from amm_core.fs import ENV_ERRNOS, describe_os_error


def build_parser() -> argparse.ArgumentParser:
    from amm_cli import analysis_cmd, data_cmd, sweep_cmd, train_cmd

    parser = argparse.ArgumentParser(
        prog="amm", description="Adversarially Learned Mixture Model experiments"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for area in (train_cmd, data_cmd, sweep_cmd, analysis_cmd):
        area.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        print("amm: interrupted", file=sys.stderr)
        return 130
    args.argv = list(sys.argv[1:] if argv is None else argv)  # to print a command to run again
    # Run as the program, a signal ends a command at once (amm_cli/__init__.py) until the
    # command installs its own handling (amm train, amm sweep run|resume), which it restores
    try:
        return int(args.func(args) or 0)
    except (ConfigError, CheckpointError) as e:  # DataError too
        print(f"amm: error: {e}", file=sys.stderr)
        return 2
    except TrainingError as e:
        print(f"amm: training failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("amm: interrupted", file=sys.stderr)
        return 130
    except (TrackingOutage, EnvironmentFailure, OSError) as e:  # OSError: disk full, read-only
        if isinstance(e, OSError) and e.errno not in ENV_ERRNOS:
            raise
        outage = isinstance(e, TrackingOutage)
        what = "tracking outage" if outage else "environment failure"
        print(
            f"amm: {what}: {describe_os_error(e) if isinstance(e, OSError) else e}", file=sys.stderr
        )
        return 4 if outage else 3


if __name__ == "__main__":
    sys.exit(main())
