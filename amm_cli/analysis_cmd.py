"""`amm table` and `amm report`.

Handlers import mlflow (through analysis.fetch) and matplotlib lazily. Bad input raises
ConfigError naming what exists.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from amm_core import names
from amm_core.errors import ConfigError

KNOWN_METRICS = {names.split_metric(s, m) for s in names.SPLITS for m in names.EVAL_METRICS}
SWEEP_HELP = "sweep name (its parent run), MLflow experiment name, or a Ray Tune results folder"


def _common(p: argparse.ArgumentParser, several: bool = False) -> None:
    p.add_argument(
        "sweep",
        metavar="SWEEP",
        nargs="+" if several else None,
        help=SWEEP_HELP
        + ("; several: side by side, one column group each (same axes)" if several else ""),
    )
    p.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    )
    p.add_argument(
        "--metric",
        action="append",
        help=f"default: {names.TEST_ERROR_GY}"
        + ("; repeat for metrics side by side, e.g. --metric test/error_bayes" if several else ""),
    )
    p.add_argument(
        "--rows",
        help="config axes for rows, comma-separated "
        "(default: the axes that vary, all but the last)",
    )
    p.add_argument(
        "--cols",
        help="config axes for columns, comma-separated (default: the last axis that varies)",
    )
    p.add_argument(
        "--expected",
        type=int,
        help="seeds each cell should have "
        "(default: the sweep's amm.num_seeds tag, else the most runs in any cell)",
    )


def register(sub: Any) -> None:
    p = sub.add_parser(
        "table",
        help="mean ± std table of a sweep's runs over seeds (optionally beside the paper)",
        description="Print a sweep's metric as mean ± std (n) per cell; errors in percent. "
        "The best cell is bold, the others carry Welch's p against it. Several sweeps or "
        "metrics: side by side, one column group each.",
    )
    _common(p, several=True)
    p.add_argument(
        "--format",
        choices=("text", "md", "latex", "csv"),
        default="text",
        help="text: aligned columns for a terminal, the best cell in bold (default); md: markdown",
    )
    p.add_argument(
        "--paper",
        action="store_true",
        help="put the paper's number and a Welch t-test beside reproduced cells",
    )
    p.add_argument(
        "--paper-table",
        type=int,
        metavar="N",
        help="lay the result out like the paper's Table N (1: MNIST, 2: SVHN-1000)",
    )
    p.add_argument(
        "--trials",
        action="store_true",
        help="one row per trial (its cell and seed), one column per --metric: the numbers "
        "behind the mean ± std cells",
    )
    p.set_defaults(func=table_cmd)

    r = sub.add_parser(
        "report",
        help="one self-contained HTML page: tables, sweep plots, run figures",
        description="Write an offline HTML report of a sweep (images embedded).",
    )
    _common(r)
    r.add_argument(
        "--out", help="the page (default: runs/reports/SWEEP.html, beside the other reports)"
    )
    r.add_argument(
        "--max-runs",
        type=int,
        default=4,
        help="runs whose figures are embedded (the best run of each cell first)",
    )
    r.add_argument(
        "--save-plots",
        metavar="DIR",
        help="also write the sweep plots and the validation curves as PNG files into DIR",
    )
    r.set_defaults(func=report_cmd)


def _split(s: str | None) -> list[str] | None:
    return None if s is None else [a.strip() for a in s.split(",") if a.strip()]


def resolve_axes(
    params: list[str],
    varying: list[str],
    rows: list[str] | None,
    cols: list[str] | None,
    df: Any = None,
) -> tuple[list[str], list[str], list[str]]:
    """(rows, cols, pooled-into-rows). Defaults use the axes that vary (a sweep's `variant`
    alone when it has one); an axis that varies but was not asked for is added to the rows, so
    no cell silently pools different configs, unless `df` shows it is fixed within every cell
    (a key that a variant sets)."""
    from amm_core.names import VARIANT
    from analysis.tables import check_axes

    check_axes(params, (rows or []) + (cols or []), varying)
    if rows is None and cols is None:
        if VARIANT in varying:
            rows, cols = [VARIANT], []
        else:
            rows, cols = (varying[:-1], varying[-1:]) if len(varying) > 1 else (varying, [])
    rows, cols = list(rows or []), list(cols or [])
    chosen = rows + cols
    extra = [a for a in varying if a not in chosen and not _fixed_within(df, chosen, a)]
    return rows + extra, cols, extra


def _fixed_within(df: Any, keys: list[str], key: str) -> bool:
    """True when `key` takes one value in each group of `keys` (a function of them)."""
    if df is None or not keys or key not in df.columns:
        return False
    d = df[[*keys, key]].astype(str)
    return bool((d.groupby(keys)[key].nunique() <= 1).all())


def _axes(args: argparse.Namespace, runs: Any, where: str = "", note: bool = True) -> tuple:
    """resolve_axes on --rows/--cols; a note on stderr names the axes added to the rows."""
    rows, cols, extra = resolve_axes(
        runs.params, runs.varying(), _split(args.rows), _split(args.cols), runs.df
    )
    if extra and note:
        print(f"amm: note: {where}{', '.join(extra)} also vary; added to the rows", file=sys.stderr)
    return rows, cols


def metrics_of(args: argparse.Namespace) -> list[str]:
    """--metric, repeatable; default test/error_gy."""
    return list(dict.fromkeys(args.metric or [names.TEST_ERROR_GY]))


_EXPORTS: dict[str, str] = {}  # an export file -> the temporary store it was imported into


def _from_export(path: str) -> tuple[str, str]:
    """A sweep export (`amm sweep export`): imported into a temporary SQLite store that lives as
    long as this process -> (sweep name, tracking URI)."""
    import atexit
    import logging
    import shutil
    import tempfile

    from sweeps.store import portable

    doc = portable.read(path)
    import mlflow  # noqa: F401 - it sets its loggers' levels on import: import, then quiet

    for logger in ("mlflow", "alembic"):  # the temporary store's set-up lines
        logging.getLogger(logger).setLevel(logging.WARNING)
    if "" not in _EXPORTS:
        d = tempfile.mkdtemp(prefix="amm-export-")
        atexit.register(shutil.rmtree, d, True)
        _EXPORTS[""] = f"sqlite:///{d}/mlflow.db"
    uri = _EXPORTS[""]
    if path not in _EXPORTS:
        portable.import_doc(doc, uri)
        _EXPORTS[path] = doc["sweep"]
    return _EXPORTS[path], uri


def load_runs(sweep: str, tracking_uri: str | None, metrics: list[str]) -> Any:
    from analysis.fetch import fetch
    from analysis.tables import check_metric
    from sweeps.store.locations import tracking_for

    if Path(sweep).is_file():  # a sweep export: read as the sweep it holds
        name, uri = _from_export(sweep)
        runs = fetch(name, uri)
    else:
        runs = fetch(sweep, tracking_for(sweep, tracking_uri))
    if runs.df.empty:
        raise ConfigError(f"'{sweep}' has no runs ({runs.source})")
    for metric in metrics:
        if metric not in runs.metrics and metric in KNOWN_METRICS:
            # a metric of the contract that no run logged (every run failed): cells say n=0 of m
            runs.df[metric] = float("nan")
            runs.metrics.append(metric)
        check_metric(runs.metrics, metric)
    return runs


def table_cmd(args: argparse.Namespace) -> int:
    from analysis import paper as pp
    from analysis import tables

    metrics, sweeps = metrics_of(args), list(dict.fromkeys(args.sweep))
    if args.trials:
        return _trials(args, sweeps, metrics)
    if len(metrics) > 1 or len(sweeps) > 1:
        return _side_by_side(args, sweeps, metrics)
    args.metric = metrics[0]
    runs = load_runs(sweeps[0], args.tracking_uri, metrics)
    expected = args.expected if args.expected is not None else runs.expected
    paper = pp.load_paper()
    if args.paper_table is not None:
        t = tables.paper_layout(
            runs.df, runs.params, args.paper_table, args.metric, paper, expected
        )
    else:
        if args.paper and args.metric != paper.metric:
            raise ConfigError(
                f"--paper compares {paper.metric} (the paper's number); got --metric {args.metric}"
            )
        rows, cols = _axes(args, runs)
        t = tables.grid_table(
            runs.df,
            rows,
            cols,
            args.metric,
            expected,
            paper if args.paper else None,
            title=f"{runs.name}: {args.metric}",
        )
    print(_render(args.format, t), end="")
    return 0


def _trials(args: argparse.Namespace, sweeps: list[str], metrics: list[str]) -> int:
    """`amm table SWEEP --trials`: one row per trial, the metrics as columns."""
    from analysis import tables

    if len(sweeps) > 1 or args.paper or args.paper_table is not None:
        raise ConfigError("--trials lists one sweep's trials; give one sweep, without --paper")
    runs = load_runs(sweeps[0], args.tracking_uri, metrics)
    rows, cols = _axes(args, runs, note=False)
    t = tables.trials_table(runs.df, rows + cols, metrics, title=f"{runs.name}: trials")
    print(_render(args.format, t), end="")
    return 0


def _render(fmt: str, t: Any) -> str:
    from analysis import render

    return render.for_terminal(t) if fmt == "text" else render.RENDERERS[fmt](t)


def _side_by_side(args: argparse.Namespace, sweeps: list[str], metrics: list[str]) -> int:
    """`amm table A B` / `--metric M1 --metric M2`: one column group per (sweep, metric)."""
    from analysis import paper as pp
    from analysis import tables
    from analysis.side_by_side import Part, side_by_side

    if args.paper_table is not None:
        raise ConfigError("--paper-table lays out one sweep and one metric; give one of each")
    paper = pp.load_paper()
    if args.paper and any(m != paper.metric for m in metrics):
        raise ConfigError(
            f"--paper compares {paper.metric} (the paper's number); got --metric "
            + ", ".join(metrics)
        )
    parts, axes, first = [], None, sweeps[0]
    for sweep in sweeps:
        runs = load_runs(sweep, args.tracking_uri, metrics)
        rows, cols = _axes(args, runs, f"{sweep}: ")
        if axes is not None and (rows, cols) != axes:
            raise ConfigError(
                f"sweeps '{first}' and '{sweep}' do not share their axes (rows {axes[0]}, cols "
                f"{axes[1]} against rows {rows}, cols {cols}); side by side needs the same swept "
                "keys: give --rows/--cols that both vary"
            )
        axes = (rows, cols)
        expected = args.expected if args.expected is not None else runs.expected
        for m in metrics:
            t = tables.grid_table(runs.df, rows, cols, m, expected, paper if args.paper else None)
            parts.append(Part(sweep, m, t))
    assert axes is not None
    print(_render(args.format, side_by_side(parts, *axes)), end="")
    return 0


def report_cmd(args: argparse.Namespace) -> int:
    from analysis.report import write_report

    metrics = metrics_of(args)
    if len(metrics) > 1:
        raise ConfigError("amm report takes one --metric (its tables show every final metric)")
    args.metric = metrics[0]
    runs = load_runs(args.sweep, args.tracking_uri, metrics)
    rows, cols = _axes(args, runs, note=False)
    from amm_core.settings import report_path

    out = write_report(
        runs,
        args.out or report_path(args.sweep),
        metric=args.metric,
        rows=rows,
        cols=cols,
        expected=args.expected,
        max_runs=args.max_runs,
        plots_dir=args.save_plots,
    )
    print(f"amm: report written to {out}")
    if args.save_plots:
        print(f"amm: plots written to {args.save_plots}")
    return 0
