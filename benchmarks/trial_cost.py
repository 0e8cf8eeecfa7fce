"""A trial's cost: steps/s of the full training step, one evaluation, the run's end, and from
them the seconds of a whole trial of a sweep spec (restart phase included), on this machine.

    .venv/bin/python benchmarks/trial_cost.py sweeps/studies/mixture_seeds.yaml --threads 1
    # side by side with another checkout (e.g. `git worktree add /tmp/base <commit>`), rounds
    # alternating between the two trees so that a load hits both alike; --set-this changes this
    # tree's trial only:
    .venv/bin/python benchmarks/trial_cost.py sweeps/studies/mixture_seeds.yaml --threads 1 \
        --baseline /tmp/base --rounds 3 --set-this train.amp='"bf16"'

Each tree is measured with its own spec file (the same relative path) and its own code: a
worker process per tree and round imports `amm_core` from that tree and times with this file's
`amm_core/run/cost.py` loaded by path (it uses only functions that older trees have too).
This is a benchmark to run, not a test; it asserts nothing. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def _worker(spec_path: str, overrides: list[str], threads: int, rounds: int) -> dict:
    """Measure in this process (its sys.path decides which tree's amm_core runs)."""
    import torch

    from sweeps.planning.spec import load_spec

    torch.set_num_threads(threads)
    loaded = importlib.util.spec_from_file_location("amm_cost", HERE / "amm_core/run/cost.py")
    cost_mod = importlib.util.module_from_spec(loaded)
    sys.modules["amm_cost"] = cost_mod  # its dataclass looks its module up there
    loaded.loader.exec_module(cost_mod)
    pairs = dict(o.split("=", 1) for o in overrides)
    spec = load_spec(spec_path, {k: json.loads(v) for k, v in pairs.items()} or None)
    cfg = spec.trial_config({})
    cost = cost_mod.measure(cfg, steps=10, rounds=rounds)
    return {
        "step_s": cost.step_s,
        "eval_s": cost.eval_s,
        "end_s": cost.end_s,
        "trained_steps": cost_mod.trained_steps(cfg),
        "evaluations": cost_mod.evaluations(cfg),
        "trial_s": cost_mod.trial_seconds(cfg, cost),
        "amp": cfg.train.amp,
        "restarts": f"{cfg.train.restarts} x {cfg.train.restart_steps}",
        "steps": cfg.train.steps,
    }


def _run_worker(tree: Path, args: argparse.Namespace, extra: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS=str(args.threads))
    cmd = [sys.executable, str(Path(__file__).resolve()), args.spec, "--worker"]
    cmd += ["--threads", str(args.threads), "--rounds", "1"]
    for o in [*args.overrides, *extra]:
        cmd += ["--set", o]
    out = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"trial_cost: the worker in {tree} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _summary(rows: list[dict]) -> dict:
    med = {k: statistics.median(r[k] for r in rows) for k in ("step_s", "eval_s", "end_s")}
    first = rows[0]
    trial = first["trained_steps"] * med["step_s"] + first["evaluations"] * med["eval_s"]
    trial += med["end_s"]
    return {
        "steps_per_sec": round(1 / med["step_s"], 3),
        "step_ms": round(1000 * med["step_s"], 1),
        "eval_s": round(med["eval_s"], 2),
        "end_s": round(med["end_s"], 2),
        "trained_steps": first["trained_steps"],
        "evaluations": first["evaluations"],
        "trial_min": round(trial / 60, 2),
        "steps_share": round(first["trained_steps"] * med["step_s"] / trial, 3),
        "config": {k: first[k] for k in ("amp", "restarts", "steps")},
        "rounds_step_ms": [round(1000 * r["step_s"], 1) for r in rows],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("spec", help="a sweep spec; its trial without grid values is measured")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=JSON")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline", help="another checkout to measure side by side")
    ap.add_argument(
        "--set-this",
        dest="this_overrides",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="an override for this tree's trial only (a setting the baseline may not have)",
    )
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.spec, args.overrides, args.threads, args.rounds)))
        return
    trees = {"this": HERE}
    if args.baseline:
        trees = {"baseline": Path(args.baseline).resolve(), "this": HERE}
    seen: dict[str, list[dict]] = {k: [] for k in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            extra = args.this_overrides if name == "this" else []
            seen[name].append(_run_worker(tree, args, extra))
    out = {name: _summary(rows) for name, rows in seen.items()}
    for name, row in out.items():
        print(json.dumps({"tree": name, "path": str(trees[name]), **row}))
    if args.baseline:
        ratio = out["this"]["trial_min"] / out["baseline"]["trial_min"]
        print(json.dumps({"trial_time_ratio_this_over_baseline": round(ratio, 3)}))
    print(f"spec={args.spec} threads={args.threads} rounds={args.rounds} (each worker: 1 round)")


if __name__ == "__main__":
    main()
