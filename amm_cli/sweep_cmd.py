"""`amm sweep plan|run|resume|status|next|export|import`.

Handlers import Ray and MLflow lazily so that `amm --help` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from amm_cli.options import add_data_dir, add_set, overrides
from amm_core.errors import ConfigError

STORAGE_HELP = (
    "sweep folders live under this path: a local folder, a shared path or s3://... "
    "(default: $AMM_SWEEP_STORAGE, where the sweep ran (runs/sweep_index.json), amm.toml's "
    "storage, else ./runs/sweeps)"
)


def _spec(name: str) -> str:
    """A spec path, or a shipped spec's name (smoke, paper/mnist_amm), also from a wheel."""
    from amm_core.presets import lookup, shipped
    from sweeps.planning import spec as spec_module

    # shipped specs are the sweeps package's data, found from a module's file (two folders up),
    # not the package's: a `sweeps` folder in the working directory can shadow the package as a
    # namespace (no __file__)
    specs = Path(spec_module.__file__).parent.parent
    path = Path(name)
    if not path.is_file():
        path = lookup(name.removeprefix("sweeps/"), specs) or path
    if not path.is_file():
        raise ConfigError(
            f"sweep spec '{name}' does not exist; shipped specs (by name): "
            f"{', '.join(s for s in shipped(specs) if not s.startswith('cluster')) or 'none'}"
        )
    return str(path)


def cmd_plan(args: argparse.Namespace) -> int:
    from sweeps.planning.plan import plan

    print(plan(_spec(args.spec), overrides(args), measure=args.measure, list_all=args.all))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from sweeps.driver import runner
    from sweeps.store import locations

    with _driver(args):
        storage = locations.storage_for(None, args.storage)
        name, code = runner.run(
            _spec(args.spec),
            name=args.name,
            storage=storage,
            address=args.address,
            tracking_uri=locations.tracking_for(None, args.tracking_uri),
            overrides=overrides(args),
            verbose=args.verbose,
            reuse_finished=args.reuse,
        )
        from sweeps.store.folder import SweepFolder

        if SweepFolder(storage, name).exists():  # not when the store held every trial already
            _summary(name, storage, code, args.no_next)
        return code


@contextlib.contextmanager
def _driver(args: argparse.Namespace) -> Iterator[None]:
    """Ctrl+C / SIGTERM handled (sweeps/driver/stopping.py), Ray's chatter quiet unless
    --verbose, and the Ray this command started stopped while the signal handlers still wait for
    it (Ray's own exit hook would run after them, where a signal cuts the driver short)."""
    from sweeps.driver import stopping, tuner

    with stopping.handled():
        if not args.verbose:
            from sweeps.driver.console import quiet_logs

            quiet_logs()
        try:
            yield
        finally:
            stopping.phase(stopping.CLEANUP)
            tuner.shutdown()


def _summary(name: str, storage: str | None, code: int, no_next: bool = False) -> None:
    """The end of run/resume: the status table, then what to run next (unless `no_next`)."""
    from sweeps.store.status import status

    print()
    print(status(name, storage))
    from amm_core.shell import amm

    where = f" --storage {storage}" if storage else ""
    hint = {
        130: f"sweep stopped; continue it with `{amm()} sweep resume {name}{where}`",
        1: f"some trials of sweep {name} failed (see `{amm()} sweep status {name}`)",
    }.get(code)
    if hint:
        print(f"amm: {hint}", file=sys.stderr)
    if not no_next:
        print()
        print(_next(name, storage))


def _next(name: str, storage: str | None, seen: tuple[str, ...] = ()) -> str:
    from sweeps.driver.console import next_commands
    from sweeps.store.folder import SweepFolder

    meta = SweepFolder(storage, name).meta
    return next_commands(name, meta.tracking_uri, meta.experiment, meta.experiment_id, seen)


def cmd_next(args: argparse.Namespace) -> int:
    from sweeps.driver.console import SEEN
    from sweeps.store import locations
    from sweeps.store.folder import SweepFolder

    seen = tuple(s.strip() for s in (args.seen or "").split(",") if s.strip())
    bad = [s for s in seen if s not in SEEN]
    if bad:
        raise ConfigError(f"--seen {','.join(bad)}: expected some of {','.join(SEEN)}")
    storage = locations.storage_for(args.name, args.storage)
    if not SweepFolder(storage, args.name).exists():
        raise ConfigError(f"no sweep folder '{args.name}' under {storage or 'runs/sweeps'}")
    print(_next(args.name, storage, seen))
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from sweeps.driver import runner
    from sweeps.store import locations

    with _driver(args):
        storage = locations.storage_for(args.name, args.storage)
        code = runner.resume(
            args.name,
            storage=storage,
            address=args.address,
            tracking_uri=args.tracking_uri,
            data_dir=args.data_dir,
            verbose=args.verbose,
        )
        _summary(args.name, storage, code, args.no_next)
        return code


def cmd_status(args: argparse.Namespace) -> int:
    from sweeps.store import ledger, locations, tracking
    from sweeps.store.folder import SweepFolder
    from sweeps.store.status import status

    storage = locations.storage_for(args.name, args.storage)
    if not SweepFolder(storage, args.name).exists():  # lost, or only imported: the store's view
        uri = tracking.resolve_tracking_uri(locations.tracking_for(args.name, args.tracking_uri))
        db = uri.removeprefix("sqlite:///")
        if db == uri or Path(db).is_file():  # never create a SQLite file to say "no sweep"
            text = ledger.store_status(args.name, uri)
            if text is not None:
                print(text)
                return 0
    print(status(args.name, storage))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from sweeps.store import locations, portable, tracking

    tracking.quiet_artifacts()

    uri = tracking.resolve_tracking_uri(locations.tracking_for(args.name, args.tracking_uri))
    out = Path(args.output or f"{args.name}.amm-sweep.json")
    doc = portable.export(args.name, uri, out, figures=args.figures)
    finished = sum(t["status"] == "FINISHED" for t in doc["trials"])
    size = out.stat().st_size
    print(
        f"exported sweep {args.name}: {len(doc['trials'])} trials ({finished} finished) "
        f"from {uri} to {out} ({size / 1e6:.2f} MB)"
    )
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from sweeps.store import locations, portable, tracking

    doc = portable.read(args.file)
    uri = tracking.resolve_tracking_uri(locations.tracking_for(None, args.tracking_uri))
    tracking.check_tracking(uri)
    rep = portable.import_doc(doc, uri)
    print(
        f"imported sweep {rep.sweep} into {uri}: {rep.created} trial runs created, "
        f"{rep.replaced} unfinished replaced by finished ones, {rep.kept} already there "
        f"(parent run {rep.parent_run_id})"
    )
    return 0


def _trial_options(p: argparse.ArgumentParser) -> None:
    add_set(p, "fixed config override for every trial (repeatable)")
    add_data_dir(p, "data root for every trial")


def _cluster_options(p: argparse.ArgumentParser, tracking_help: str) -> None:
    """--address, --tracking-uri, --storage: where a sweep runs, is tracked and is stored."""
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS or local)")
    p.add_argument("--tracking-uri", help=tracking_help)
    p.add_argument("--storage", help=STORAGE_HELP)
    p.add_argument(
        "--verbose",
        action="store_true",
        help="Ray Tune's own output (trial tables, worker logs) instead of the short console",
    )
    p.add_argument(
        "--no-next",
        action="store_true",
        help="end with the status table, without the next commands (`amm sweep next` prints them)",
    )


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="Ray Tune sweeps tracked in MLflow",
        description="Plan, run, resume and inspect sweeps (specs in sweeps/)",
    )
    sub = p.add_subparsers(dest="sweep_command", required=True, metavar="SUBCOMMAND")

    pp = sub.add_parser("plan", help="print the trial grid, count, resources, estimated cost")
    pp.add_argument("spec", help="sweep spec YAML, e.g. sweeps/paper/mnist_amm.yaml")
    pp.add_argument(
        "--measure",
        action="store_true",
        help="time a few training steps of the base config on this machine",
    )
    pp.add_argument("--all", action="store_true", help="list every trial of a large grid")
    _trial_options(pp)
    pp.set_defaults(func=cmd_plan)

    pr = sub.add_parser("run", help="start a sweep (local Ray by default)")
    pr.add_argument("spec", help="sweep spec YAML")
    pr.add_argument("--name", help="sweep name (default: <spec stem>-<timestamp>)")
    _cluster_options(
        pr, "MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db here)"
    )
    pr.add_argument(
        "--reuse",
        action="store_true",
        help="copy, instead of training, each cell that has a finished trial of another sweep "
        "in the tracking store with the same config hash and seed (studies share cells)",
    )
    _trial_options(pr)
    pr.set_defaults(func=cmd_run)

    pm = sub.add_parser("resume", help="continue a stopped sweep (Tuner.restore)")
    pm.add_argument("name", help="sweep name")
    _cluster_options(pm, "MLflow tracking URI (default: the sweep's own)")
    pm.add_argument(
        "--data-dir", help="a new data root for the trials this resume runs (default: the sweep's)"
    )
    pm.set_defaults(func=cmd_resume)

    ps = sub.add_parser("status", help="finished / failed / running / missing cells of a sweep")
    ps.add_argument("name", help="sweep name")
    ps.add_argument("--storage", help=STORAGE_HELP)
    ps.add_argument(
        "--tracking-uri",
        help="where to look when the sweep has no folder here (default: the sweep's own, "
        "$MLFLOW_TRACKING_URI or sqlite:///mlflow.db here)",
    )
    ps.set_defaults(func=cmd_status)

    pn = sub.add_parser(
        "next", help="the commands that show a sweep's results (table, report, MLflow UI)"
    )
    pn.add_argument("name", help="sweep name")
    pn.add_argument("--storage", help=STORAGE_HELP)
    pn.add_argument(
        "--seen",
        metavar="CMDS",
        help="comma-separated commands just run, left out: table, report, status "
        "(make demo: --seen table,report)",
    )
    pn.set_defaults(func=cmd_next)

    pe = sub.add_parser("export", help="write a sweep of the tracking store to one portable file")
    pe.add_argument("name", help="sweep name")
    pe.add_argument("-o", "--output", help="the file (default: NAME.amm-sweep.json; .gz: gzip)")
    pe.add_argument("--tracking-uri", help="MLflow tracking URI (default: the sweep's own)")
    pe.add_argument("--figures", action="store_true", help="include each trial's figures")
    pe.set_defaults(func=cmd_export)

    pi = sub.add_parser(
        "import", help="recreate an exported sweep in a tracking store (no duplicate runs)"
    )
    pi.add_argument("file", help="a file written by `amm sweep export`")
    pi.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db here)",
    )
    pi.set_defaults(func=cmd_import)
