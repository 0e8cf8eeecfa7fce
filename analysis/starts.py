"""The restart phase's starts (docs/method.md section 9): how often a start splits a pair of
digits, and whether the clustering term, read at a given step, kept a start that did not.

A starts table has one row per start and evaluation: trial, cell, seed, start, step, score (the
clustering term `loss/cluster`, what the choice reads) and val_error (`val/error_gy`, which the
choice never reads). Two sources:
- a sweep export (`amm sweep export`): each trial's tags `amm.restart_scores` and
  `amm.restart_val_errors`, the starts' last evaluation only;
- a starts file, `{"starts": [rows]}` (results/restarts/starts.json), every evaluation of
  each start, read from the trials' folders (`from_run_dir`: starts/start_K/metrics.jsonl).

`python -m analysis.starts FILE...` prints the split rate per cell and the choice per step.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from amm_core import names
from amm_core.fs import json_lines

COLUMNS = ["trial", "cell", "seed", "start", "step", "score", "val_error"]
# a start above this validation error has split a pair of digits: split starts sit at 8-28 %,
# the others at 2-5 % (docs/results.md, "Why restarts")
SPLIT = 0.06


def parse_pairs(text: str) -> dict[int, float]:
    """A tag's "k: value" pairs: "0: -2.0831, 1: -2.1782" -> {0: -2.0831, 1: -2.1782}."""
    out: dict[int, float] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        k, _, v = part.partition(":")
        out[int(k)] = float(v)
    return out


def _cell(sweep: str, trial: dict[str, Any]) -> str:
    """The trial's cell: its sweep and run name without the seed ("study: variant=full")."""
    parts = [p for p in trial.get("run_name", "").split(",") if not p.startswith("seed=")]
    return f"{sweep}: {','.join(parts)}" if parts else sweep


def from_export(doc: dict[str, Any]) -> pd.DataFrame:
    """The starts of an export's trials that recorded both tags (older trials recorded scores
    only: they are left out), at the phase's last step (the param train.restart_steps)."""
    rows = []
    for t in doc.get("trials", []):
        tags = t.get("tags", {})
        scores = parse_pairs(tags.get(names.TAG_RESTART_SCORES, ""))
        errors = parse_pairs(tags.get(names.TAG_RESTART_VAL_ERRORS, ""))
        step = int(t.get("params", {}).get("train.restart_steps", 0))
        sweep = doc.get("sweep", "")
        trial, cell, seed = f"{sweep}/{t.get('run_name', '')}", _cell(sweep, t), int(t["seed"])
        for k in sorted(scores.keys() & errors.keys()):
            rows.append((trial, cell, seed, k, step, scores[k], errors[k]))
    return pd.DataFrame(rows, columns=COLUMNS)


def from_run_dir(folder: str | Path, trial: str, cell: str, seed: int) -> pd.DataFrame:
    """Every evaluation of each start in a run folder (its starts/start_K/metrics.jsonl)."""
    rows = []
    for k in range(1000):
        path = names.start_dir(folder, k) / names.METRICS_FILE
        if not path.exists():
            break
        for m in json_lines(path):
            if names.LOSS_CLUSTER in m and names.VAL_ERROR_GY in m:
                rows.append((trial, cell, seed, k, int(m[names.STEP]), float(m[names.LOSS_CLUSTER]),
                             float(m[names.VAL_ERROR_GY])))  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)


def load(path: str | Path) -> pd.DataFrame:
    """A starts table from an export or a starts file."""
    doc = json.loads(Path(path).read_text())
    if "starts" in doc:
        return pd.DataFrame(doc["starts"], columns=COLUMNS)
    return from_export(doc)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson's 95 % interval of a proportion k/n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, mid - half), min(1.0, mid + half))


def outcomes(df: pd.DataFrame) -> pd.DataFrame:
    """Each start's last evaluation: its outcome (one row per trial and start)."""
    last = df.sort_values("step", kind="stable").groupby(["trial", "start"], sort=False).tail(1)
    return last.sort_values(["trial", "start"], kind="stable").reset_index(drop=True)


def split_rates(df: pd.DataFrame, threshold: float = SPLIT) -> pd.DataFrame:
    """Per cell: trials, starts, starts split at their last evaluation, the rate and its Wilson
    interval, and the trials whose every start split (no choice could have saved them)."""
    end = outcomes(df)
    end = end.assign(split=end["val_error"] > threshold)
    rows = []
    for cell, g in end.groupby("cell", sort=True):
        k, n = int(g["split"].sum()), len(g)
        lo, hi = wilson(k, n)
        all_split = int(g.groupby("trial")["split"].all().sum())
        rows.append((cell, g["trial"].nunique(), n, k, k / n, lo, hi, all_split))
    cols = ["cell", "trials", "starts", "split", "rate", "low", "high", "all_split"]
    return pd.DataFrame(rows, columns=cols)


def choices(df: pd.DataFrame, step: int, threshold: float = SPLIT) -> pd.DataFrame:
    """Per trial whose starts all reached `step`: the start the lowest clustering term there
    would keep (the first of equals, as the phase does), its outcome (validation error at its
    last evaluation), whether it split, and whether a start that did not split was there."""
    at = df[df["step"] == step]
    end = outcomes(df).set_index(["trial", "start"])["val_error"]
    rows = []
    for trial, g in at.groupby("trial", sort=True):
        n_starts = df.loc[df["trial"] == trial, "start"].nunique()
        if len(g) < n_starts:
            continue
        kept = int(g.sort_values(["score", "start"], kind="stable")["start"].iloc[0])
        errs = [end[(trial, k)] for k in sorted(g["start"])]
        rows.append((trial, g["cell"].iloc[0], kept, end[(trial, kept)],
                     end[(trial, kept)] > threshold, min(errs) <= threshold))  # fmt: skip
    cols = ["trial", "cell", "kept", "kept_error", "kept_split", "good_start"]
    return pd.DataFrame(rows, columns=cols)


def choice_summary(df: pd.DataFrame, threshold: float = SPLIT) -> pd.DataFrame:
    """Per phase length (the starts' last step) and evaluation step: trials, trials with a start
    that did not split, and trials where choosing at that step kept a split start although one
    that did not split was there."""
    length = df.groupby("trial")["step"].transform("max").rename("phase")
    rows = []
    for phase, part in df.assign(phase=length).groupby("phase", sort=True):
        for step in sorted(part["step"].unique()):
            c = choices(part, int(step), threshold)
            if c.empty:
                continue
            missed = int((c["kept_split"] & c["good_start"]).sum())
            rows.append((int(phase), int(step), len(c), int(c["good_start"].sum()), missed))
    cols = ["phase_steps", "step", "trials", "with_good_start", "kept_split"]
    return pd.DataFrame(rows, columns=cols)


def _table(title: str, df: pd.DataFrame) -> str:
    """A result frame as markdown, through the project's Table (analysis/render.py)."""
    from analysis.render import to_markdown
    from analysis.tables import Table

    rows = [
        [f"{v:.3f}" if isinstance(v, float) else str(v) for v in r]
        for r in df.itertuples(index=False)
    ]
    return to_markdown(Table(title, list(df.columns), rows))


def main(argv: list[str] | None = None) -> int:
    doc = (__doc__ or "").split("\n")[0]
    ap = argparse.ArgumentParser(prog="python -m analysis.starts", description=doc)
    ap.add_argument("files", nargs="+", help="sweep exports or starts files")
    ap.add_argument("--threshold", type=float, default=SPLIT, help="split above this val error")
    a = ap.parse_args(argv)
    frames = []
    for f in a.files:
        if not Path(f).is_file():
            print(f"analysis.starts: no such file: {f}", file=sys.stderr)
            return 2
        frames.append(load(f))
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    if df.empty:
        print("analysis.starts: no starts with a score and a validation error in "
              + ", ".join(a.files), file=sys.stderr)  # fmt: skip
        return 2
    split = f"split: validation error above {a.threshold:g} at a start's last evaluation"
    print(_table(f"Starts per cell ({split})", split_rates(df, a.threshold)))
    print(_table("The choice per phase length and step", choice_summary(df, a.threshold)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
