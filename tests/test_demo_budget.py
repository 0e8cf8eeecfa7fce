"""The demo (`make demo`, sweeps/demo.yaml) on a step budget: its numbers do not depend on the
machine. Each trial stops on its steps, never on a clock, and a run of the demo's preset gives the
same numbers on a slower machine (simulated: AMM_STEP_DELAY_S sleeps after each step), where a
time budget would not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from amm_core import names
from amm_core.config import load_config, total_steps
from amm_core.run.restarts import train
from sweeps.planning.spec import load_spec

REPO = Path(__file__).resolve().parent.parent
# the demo's preset, cut small: real MNIST, a few steps, no figures
SMALL = [
    "data.train_subset=2000",
    "data.val_size=500",
    "train.steps=12",
    "train.eval_every=6",
    "train.figures=false",
    "train.gen_metrics=false",
    "train.eval_batch_size=500",
]


def test_every_demo_trial_stops_on_steps_not_minutes():
    spec = load_spec(REPO / "sweeps" / "demo.yaml", [])
    cfgs = [spec.trial_config(c) for c in spec.cells()]
    assert len(cfgs) == spec.num_trials() >= 4
    for cfg in cfgs:
        assert cfg.train.max_minutes == 0, "a time budget makes the numbers depend on the machine"
        assert cfg.train.steps > 0 and cfg.train.stop_on_plateau == 0
    assert {total_steps(c) for c in cfgs} == {cfgs[0].train.steps}  # one budget, said once
    # the spec and `make demo` say the budget in steps, the same as the trials'
    assert f"{cfgs[0].train.steps} steps" in spec.description
    assert f"({cfgs[0].train.steps} steps of a tiny network" in (REPO / "Makefile").read_text()


def _final(out: Path, monkeypatch, delay: float, *extra: str) -> dict:
    monkeypatch.setenv("AMM_STEP_DELAY_S", str(delay))
    cfg = load_config(REPO / "configs" / "demo.yaml", [*SMALL, *extra])
    torch.set_num_threads(1)
    result = train(cfg, out)
    lines = [json.loads(x) for x in (out / names.METRICS_FILE).read_text().splitlines()]
    return {
        "step": result.step,
        "reason": result.stop_reason,
        "final": {k: result.final[k] for k in names.FINAL_METRICS},
        "val": [x[names.VAL_ERROR_GY] for x in lines if names.VAL_ERROR_GY in x],
    }


def test_a_slower_machine_gives_the_same_numbers(tmp_path, data_root, monkeypatch):
    fast = _final(tmp_path / "fast", monkeypatch, 0.0)
    slow = _final(tmp_path / "slow", monkeypatch, 0.1)  # 1.2 s more over the 12 steps
    assert fast["step"] == slow["step"] == 12 and fast["reason"] == names.STOP_STEPS
    assert slow == fast
    # under a time budget of 3 s instead, a machine slower by 2 s a step trains fewer steps
    budget = ["train.max_minutes=0.05", "train.steps=100000"]
    quick = _final(tmp_path / "quick", monkeypatch, 0.0, *budget)
    late = _final(tmp_path / "late", monkeypatch, 2.0, *budget)
    assert late["reason"] == names.STOP_TIME_BUDGET and late["step"] <= 2 < quick["step"]


@pytest.mark.parametrize("raw", ["x", "-"])
def test_a_bad_delay_is_named(raw, monkeypatch):
    from amm_core import settings
    from amm_core.errors import ConfigError

    monkeypatch.setenv("AMM_STEP_DELAY_S", raw)
    with pytest.raises(ConfigError, match="AMM_STEP_DELAY_S"):
        settings.step_delay_s()
