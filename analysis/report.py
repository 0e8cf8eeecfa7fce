"""`amm report`: one self-contained HTML page of a sweep, readable offline.

Tables (every final metric, the paper's layouts where the sweep has matching runs), the sweep's
plots, the validation curves of every cell (mean over seeds), a list of runs and the figures of
a few runs (the best run of each cell first). Images are embedded as base64 data URIs, the CSS
is inline; the page references nothing outside itself.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import math
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from amm_core import names
from amm_core.descriptions import describe
from amm_core.fmt import percent
from amm_core.fs import write_atomic
from analysis import aggregate as agg
from analysis import measured, plots, render, tables
from analysis import paper as pp
from analysis.fetch import STATUS, STOP_REASON, Runs
from analysis.history import fetch_history

MAX_PNG_BYTES = 2_000_000  # skip larger images to keep the page small

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1, h2, h3 { font-weight: 600; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 14px; }
caption { text-align: left; font-weight: 600; padding-bottom: .4em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td.best { font-weight: 700; background: #e8f4e8; }
.scroll { max-width: 100%; overflow-x: auto; }  /* a wide table scrolls, the page does not */
p.description { background: #fff8e1; border-left: 4px solid #f0b400; padding: .5em .8em; }
p.note { color: #555; font-size: 13px; margin: .2em 0; }
figure { display: inline-block; margin: .5em; vertical-align: top; max-width: calc(50% - 1.3em); }
figure img { max-width: 100%; border: 1px solid #ddd; }  /* two side by side */
figure.wide { display: block; margin: .5em 0; max-width: 100%; }  /* the page's width */
figure.wide img { width: 100%; }
p.reference { color: #333; font-size: 14px; }
table.metrics td { text-align: left; font-size: 13px; padding: 2px 8px; }
table.metrics td:first-child { font-family: monospace; white-space: nowrap; }
figcaption { font-size: 12px; color: #555; }
.meta { color: #555; }
"""


# figures too wide to read at half the page: the page's full width
WIDE = frozenset({names.FIG_RECONSTRUCTIONS, names.FIG_TRAINING})


def _img(png: bytes, caption: str, wide: bool = False) -> str:
    src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    cls = ' class="wide"' if wide else ""
    return (
        f'<figure{cls}><img alt="{html.escape(caption)}" src="{src}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _order(path: str) -> tuple[int, str]:
    """The per-run figures in the order the paper shows them; other PNGs follow by name."""
    order, name = names.FIGURE_FILES, Path(path).name
    return (order.index(name) if name in order else len(order), path)


def candidates(runs: pd.DataFrame, by: list[str], metric: str) -> list[list[str]]:
    """Finished run ids per cell, best run first; cells ordered by their best run."""
    ok = runs[agg.ok_mask(runs, metric)]
    if ok.empty:
        return []
    ok = ok.sort_values(metric, ascending=not agg.higher_is_better(metric), kind="stable")
    if not by:
        return [list(ok["run_id"])]
    cells: dict[tuple, list[str]] = {}
    for row in ok[[*by, "run_id"]].itertuples(index=False, name=None):
        cells.setdefault(tuple(row[:-1]), []).append(row[-1])
    return list(cells.values())  # dicts keep insertion order: best cell first


def _mlflow_pngs(
    client: Any, run_id: str, dst: Path, path: str | None = None, depth: int = 0
) -> list[tuple[str, bytes]]:
    out = []
    for f in client.list_artifacts(run_id, path):
        if f.is_dir and depth < 3:
            out += _mlflow_pngs(client, run_id, dst, f.path, depth + 1)
        elif f.path.endswith(".png") and (f.file_size or 0) <= MAX_PNG_BYTES:
            local = client.download_artifacts(run_id, f.path, str(dst))
            out.append((f.path, Path(local).read_bytes()))
    return out


class FigureSource:
    """run id -> [(artifact path, PNG bytes)], from a Ray trial folder or MLflow artifacts."""

    def __init__(self, runs: Runs) -> None:
        self.runs = runs
        self._client: Any = None
        self._tmp = tempfile.TemporaryDirectory()

    def __call__(self, run_id: str) -> list[tuple[str, bytes]]:
        out: list[tuple[str, bytes]] = []
        if self.runs.artifact_dirs:
            folder = Path(self.runs.artifact_dirs.get(run_id, ""))
            pngs = sorted(folder.glob("**/*.png")) if folder.is_dir() else []
            out = [
                (str(p.relative_to(folder)), p.read_bytes())
                for p in pngs
                if p.stat().st_size <= MAX_PNG_BYTES
            ]
        elif self.runs.tracking_uri:
            if self._client is None:
                from mlflow.tracking import MlflowClient

                self._client = MlflowClient(tracking_uri=self.runs.tracking_uri)
            dst = Path(self._tmp.name) / run_id
            dst.mkdir(exist_ok=True)
            # MLflow draws a progress bar per downloaded file; not on a report's stdout (unless
            # asked for: the variable set)
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
            out = _mlflow_pngs(self._client, run_id, dst)
        return sorted(out, key=lambda t: _order(t[0]))

    def close(self) -> None:
        self._tmp.cleanup()


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return "" if v is None else str(v)


def value_text(metric: str, v: Any) -> str:
    """A metric as a person reads it: errors in percent ('69.25 %'), others as stored."""
    return percent(v) if names.is_error(metric) else _fmt(v)


def runs_table(runs: pd.DataFrame, axes: list[str], metrics: list[str]) -> str:
    cols = ["run_name", STATUS] + [a for a in ["seed", *axes] if a in runs.columns] + metrics
    if STOP_REASON in runs.columns and runs[STOP_REASON].notna().any():
        cols.insert(2, STOP_REASON)  # a plateau stop or a time budget ended the run
    d = runs[cols].sort_values([c for c in [*axes, "seed"] if c in runs.columns] or ["run_name"])
    pct = {c for c in metrics if names.is_error(c)}  # errors in percent, as in the tables

    def cell(c: str, v: object) -> str:
        if c in pct and isinstance(v, float) and not math.isnan(v):
            return f"{100 * v:.2f}"
        return _fmt(v)

    head = "".join(f"<th>{html.escape(c + (' (%)' if c in pct else ''))}</th>" for c in cols)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(cell(c, v))}</td>" for c, v in zip(cols, row, strict=True))
        + "</tr>"
        for row in d.itertuples(index=False, name=None)
    )
    return (
        '<div class="scroll"><table><caption>Runs</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
    )


def diag_metrics(df: pd.DataFrame) -> list[str]:
    """The generation and latent-path diagnostics the runs logged (their last values)."""
    return [m for m in (*names.GEN_METRICS, *names.DIAG_METRICS) if m in df.columns]


def metrics_list(metrics: list[str], curves: bool) -> str:
    """One line per metric the page shows, from amm_core.descriptions (the one table of them)."""
    shown = list(dict.fromkeys([*metrics, *([names.VAL_ERROR_GY] if curves else [])]))
    rows = "".join(
        f"<tr><td>{html.escape(m)}</td><td>{html.escape(describe(m))}</td></tr>"
        for m in shown
        if describe(m)
    )
    if not rows:
        return ""
    return (
        '<table class="metrics"><caption>What the metrics mean</caption>'
        f"<tbody>{rows}</tbody></table>"
    )


def build_report(
    runs: Runs,
    metric: str,
    rows: list[str],
    cols: list[str],
    expected: int | None = None,
    max_runs: int = 4,
    figures: Callable[[str], list[tuple[str, bytes]]] | None = None,
    history: pd.DataFrame | None = None,
    plots_out: dict[str, bytes] | None = None,
) -> str:
    """The page as a string. `figures(run_id)` gives a run's PNGs (default: FigureSource);
    each cell shows its best run that has figures, at most max_runs cells, best cell first.
    `history`: val/error_gy over the steps (analysis.history; default: fetched from the runs).
    `plots_out`, if given, receives the sweep plots and the curves as PNG bytes by title."""
    pngs: dict[str, bytes] = plots_out if plots_out is not None else {}
    df, esc = runs.df, html.escape
    expected = expected if expected is not None else runs.expected
    paper = pp.load_paper()
    parts = [
        f"<h1>Sweep report: {esc(runs.name)}</h1>",
        f'<p class="meta">{esc(runs.source)}<br>generated '
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC</p>",
    ]
    if runs.description:  # the spec's word on what the sweep is (the demo: a demo budget)
        parts.append(f'<p class="description">{esc(runs.description)}</p>')
    # what the project measured, in the words the README and `make demo` use (one source)
    parts.append(f'<p class="reference">For reference: {esc(measured.headline())}</p>')
    counts = df[STATUS].value_counts().sort_index()
    parts.append(
        '<p class="meta">'
        + esc(f"{len(df)} runs: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        + "</p>"
    )

    curves = history if history is not None else fetch_history(runs, names.VAL_ERROR_GY)
    curves_shown = not curves.empty
    parts.append("<h2>Tables</h2>")
    shown = [metric] + [m for m in names.FINAL_METRICS if m in runs.metrics and m != metric]
    for m in shown:
        t = tables.grid_table(
            df,
            rows,
            cols,
            m,
            expected,
            paper if m == paper.metric else None,
            title=f"{runs.name}: {m}",
        )
        parts.append(render.to_html(t))
    for number, pt in paper.tables.items():
        if metric == paper.metric and not pp.select(df, pt.where).empty:
            parts.append(
                render.to_html(
                    tables.comparisons_as_notes(
                        tables.paper_layout(df, runs.params, number, metric, paper, expected)
                    )
                )
            )

    parts.append(metrics_list([*shown, *(m for m in diag_metrics(df))], bool(curves_shown)))

    # the tables' axes: a variant study is plotted by variant, not by the keys its variants set
    figs = plots.sweep_plots(df, rows + cols, metric, expected)
    if figs:
        parts.append("<h2>Sweep plots</h2>")
        for title, f in figs:
            pngs[title] = plots.png_bytes(f)
            parts.append(_img(pngs[title], title))

    if not curves.empty:
        title = f"{names.VAL_ERROR_GY} over training per cell: its seeds and their mean"
        fig = plots.validation_curves(curves, df, rows + cols, names.VAL_ERROR_GY, title)
        pngs[title] = plots.png_bytes(fig)
        parts += ["<h2>Validation curves</h2>", _img(pngs[title], title, wide=True)]

    parts.append("<h2>Runs</h2>")
    # generation and latent-path diagnostics (last logged values; docs/method.md) beside them
    diag = diag_metrics(df)
    parts.append(runs_table(df, rows + cols, [m for m in shown if m in df.columns] + diag))

    source = figures or FigureSource(runs)
    shown_runs: list[tuple[str, list[tuple[str, bytes]]]] = []
    try:
        for cell in candidates(df, rows + cols, metric):
            if len(shown_runs) >= max_runs:
                break
            for rid in cell:
                pngs = source(rid)
                if pngs:
                    shown_runs.append((rid, pngs))
                    break
    finally:
        if isinstance(source, FigureSource):
            source.close()
    if shown_runs:
        parts.append(
            f"<h2>Run figures</h2><p class='note'>per cell its best run with figures, "
            f"best cell first (at most {max_runs})</p>"
        )
    for rid, pngs in shown_runs:
        r = df[df["run_id"] == rid].iloc[0]
        label = ", ".join(f"{a}={_fmt(r[a])}" for a in [*rows, *cols, "seed"] if a in df.columns)
        parts.append(
            f"<h3>{esc(str(r['run_name']))} ({esc(label)}): {esc(metric)} = "
            f"{esc(value_text(metric, r[metric]))}</h3>"
        )
        parts += [_img(png, Path(path).name, Path(path).name in WIDE) for path, png in pngs]

    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{esc(runs.name)}: sweep report</title><style>{CSS}</style></head>"
        "<body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )


def write_report(
    runs: Runs,
    out: str | Path,
    metric: str,
    rows: list[str],
    cols: list[str],
    expected: int | None = None,
    max_runs: int = 4,
    plots_dir: str | Path | None = None,
) -> Path:
    """Write the page; with `plots_dir`, also the sweep plots and the validation curves as PNG
    files there (`<sweep>-<title>.png`), for a results page to link."""
    pngs: dict[str, bytes] = {}
    page = build_report(runs, metric, rows, cols, expected, max_runs, plots_out=pngs)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, page)  # never leave a half-written page
    if plots_dir is not None:
        folder = Path(plots_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for title, png in pngs.items():
            write_atomic(folder / plot_file(runs.name, title), png)
    return out


def plot_file(sweep: str, title: str) -> str:
    """A plot's file name: sweep and title with anything but letters, digits, '.', '-' as '_'."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", f"{sweep}-{title}").strip("_") + ".png"
