"""Sweep scaling and the Ray + MLflow overhead on this machine (docs/performance.md).

    .venv/bin/python benchmarks/sweep_scaling.py --steps 600

Three runs of the same config and number of steps, one after the other (run it on an otherwise
idle machine):
  alone   `amm train`, 1 thread;
  sweep1  `amm sweep run` with that one trial (1 CPU): overhead = its wall time against alone's;
  sweep2  `amm sweep run` with 2 trials at once (1 CPU each): total images/s against alone's.
Images/s is the median of `perf/images_per_sec` in each run's metrics.jsonl (training only);
wall time is the whole command (start-up, evaluations, the test evaluation; figures off).
Prints one JSON line per run, then one with the ratios. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

AMM = [sys.executable, "-m", "amm_cli.main"]


def ips(metrics: Path) -> float:
    lines = [json.loads(ln) for ln in metrics.read_text().splitlines() if ln]
    return statistics.median(m["perf/images_per_sec"] for m in lines if "perf/images_per_sec" in m)


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # `amm train` alone on 1 thread, as a trial
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t0


def spec(path: Path, config: str, steps: int, seeds: int) -> Path:
    path.write_text(
        f"base: {Path(config).resolve()}\n"
        "experiment: amm-bench\n"
        f"overrides: {{train.steps: {steps}, train.figures: false}}\n"
        f"seeds: {seeds}\n"
        "resources: {cpu: 1, gpu: 0}\n"
    )
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/mnist_amm.yaml")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="amm-bench-"))
    data = ["--data-dir", args.data_dir] if args.data_dir else []
    common = ["--tracking-uri", f"sqlite:///{out}/mlflow.db", "--storage", str(out / "sweeps")]
    rows = {}

    train_out = out / "alone"
    wall = timed(
        [*AMM, "train", args.config, *data, "--out", str(train_out)]
        + ["--set", f"train.steps={args.steps}", "--set", "train.figures=false"]
    )
    rows["alone"] = {"wall_s": wall, "images_per_sec": ips(train_out / "metrics.jsonl")}
    for name, seeds in (("sweep1", 1), ("sweep2", 2)):
        path = spec(out / f"{name}.yaml", args.config, args.steps, seeds)
        wall = timed([*AMM, "sweep", "run", str(path), "--name", name, *common, *data])
        found = sorted((out / "sweeps" / name).rglob("metrics.jsonl"))
        assert len(found) == seeds, found
        rows[name] = {"wall_s": wall, "images_per_sec": sum(ips(p) for p in found)}
    for name, row in rows.items():
        print(json.dumps({"run": name, **{k: round(v, 1) for k, v in row.items()}}))
    a, s1, s2 = rows["alone"], rows["sweep1"], rows["sweep2"]
    ratios = {
        "overhead_wall": round(s1["wall_s"] / a["wall_s"] - 1, 3),
        "overhead_images_per_sec": round(1 - s1["images_per_sec"] / a["images_per_sec"], 3),
        "scaling_2_trials": round(s2["images_per_sec"] / a["images_per_sec"], 2),
    }
    print(json.dumps({**ratios, "steps": args.steps, "config": args.config, "out": str(out)}))


if __name__ == "__main__":
    main()
