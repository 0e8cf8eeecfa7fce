"""What a run costs (amm_core/run/cost.py): the count of evaluations and the trial's seconds by
hand, and `amm sweep plan --measure` pricing a trial's evaluations and end as measured."""

from pathlib import Path

import pytest

from amm_cli.main import main as amm
from amm_core.config import load_config
from amm_core.run.cost import RunCost, budgeted_seconds, evaluations, trial_seconds

REPO = Path(__file__).resolve().parent.parent


def test_evaluations_and_trial_seconds_by_hand():
    plain = load_config(None, ["train.steps=2000", "train.eval_every=500"])
    assert evaluations(plain) == 4
    # 3 starts of 500 steps: each evaluates once; the kept one's evaluation is the run's first
    phased = load_config(
        None,
        ["train.steps=2000", "train.eval_every=500", "train.restarts=3",
         "train.restart_steps=500", "loss.cluster_weight=1"],
    )  # fmt: skip
    assert evaluations(phased) == 4 + 2
    odd = load_config(None, ["train.steps=1200", "train.eval_every=500"])
    assert evaluations(odd) == 3  # 500, 1000 and the last step
    cost = RunCost(step_s=0.2, eval_s=1.0, end_s=7.0)
    # 3,000 trained steps at 0.2 s, 6 evaluations, the end
    assert trial_seconds(phased, cost) == pytest.approx(3000 * 0.2 + 6 * 1.0 + 7.0)
    # at 10 steps/s: 300 s of training, or the time budget when it is shorter
    assert budgeted_seconds(phased, 10.0) == pytest.approx(300.0)
    assert budgeted_seconds(phased.replace(**{"train.max_minutes": 2}), 10.0) == 120.0


def test_plan_measure_prices_evaluations_and_the_end(data_root, capsys):
    assert amm(["sweep", "plan", str(REPO / "sweeps" / "smoke.yaml"), "--measure"]) == 0
    out = capsys.readouterr().out
    assert "measured now: 3 rounds of 10 steps" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("evaluation "))
    each, end = (float(w) for w in line.replace(" s", " ").split() if w.replace(".", "").isdigit())
    assert 0 < each < 60 and 0 < end < 300, line
    assert "(training, evaluations and figures" in out
