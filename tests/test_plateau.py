"""Plateau stop (train.stop_on_plateau): the counter, a real run it ends, and its resume."""

from __future__ import annotations

import json
import math

import pytest
import torch

from amm_core import names
from amm_core.config import load_config
from amm_core.errors import ConfigError
from amm_core.run.plateau import Plateau
from amm_core.run.train import run

# the smoke preset, smaller: 10-step evaluations on a 2,000-image train split
FAST = [
    "data.train_subset=2000",
    "data.val_size=500",
    "train.batch_size=32",
    "train.steps=100",
    "train.eval_every=10",
    "train.log_every=5",
    "train.figures=false",
]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_plateau_counts_evaluations_without_improvement():
    p = Plateau(patience=2)
    # the first value is the best; an equal value is no improvement (delta 0: any drop counts)
    assert [p.update(v) for v in (0.5, 0.5, 0.4, 0.45, 0.4)] == [False, False, False, False, True]
    assert (p.best, p.since) == (0.4, 2)
    # with delta, a drop smaller than delta is no improvement; at least delta is
    q = Plateau(patience=1, delta=0.1)
    assert [q.update(v) for v in (0.5, 0.45)] == [False, True]
    q = Plateau(patience=1, delta=0.1)
    assert [q.update(v) for v in (0.5, 0.4, 0.3)] == [False, False, False]
    assert math.isclose(q.best, 0.3)
    # patience 0 is off however flat the curve
    off = Plateau(patience=0)
    assert not any(off.update(0.5) for _ in range(10))
    # the state round-trips (it lives in the checkpoint)
    r = Plateau(patience=2)
    r.load_state_dict(p.state_dict())
    assert (r.best, r.since, r.done) == (0.4, 2, True)


@pytest.mark.parametrize(
    "override, words",
    [("train.stop_on_plateau=-1", "train.stop_on_plateau"), ("train.plateau_delta=-0.1", "[0, 1)")],
)
def test_bad_plateau_keys_name_the_key(override, words):
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace(")", r"\)")):
        load_config("configs/smoke.yaml", [override])


def test_plateau_stop_ends_the_run_like_a_finish(tmp_path, data_root):
    # a drop of 0.99 (99 points of error) never happens: the second evaluation is the plateau
    cfg = load_config(
        "configs/smoke.yaml",
        [*FAST, "train.stop_on_plateau=1", "train.plateau_delta=0.99", "train.figures=true"]
        + ["train.tsne_points=50"],
    )
    reports = []
    result = run(cfg, tmp_path / "r", report=lambda *r: reports.append(r))
    out = tmp_path / "r"
    steps = [json.loads(ln)["step"] for ln in (out / names.METRICS_FILE).read_text().splitlines()]
    assert steps == [10, 20] and result.step == 20 and not result.stopped
    final = json.loads((out / names.FINAL_FILE).read_text())
    assert final[names.STOP_REASON] == names.STOP_PLATEAU and final[names.STEP] == 20
    assert names.TEST_ERROR_GY in final and [r[2] for r in reports] == [False, False, True]
    assert (out / names.FIGURES_DIR / "training.png").is_file()


def test_the_console_says_the_plateau_ended_training(tmp_path, data_root, capsys):
    from amm_cli.progress import TrainConsole

    cfg = load_config(
        "configs/smoke.yaml", [*FAST, "train.stop_on_plateau=1", "train.plateau_delta=0.99"]
    )
    run(cfg, tmp_path / "r", report=TrainConsole(cfg, lines=True))
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and "ETA" in lines[0] and "took" in lines[1], lines
    assert lines[2] == (
        "training done at step 20 (plateau stop: val error not improved for 1 evaluations): "
        "evaluating on the test set ..."
    )
    # the last evaluation's metrics line says why training ended there
    last = json.loads((tmp_path / "r" / names.METRICS_FILE).read_text().splitlines()[-1])
    assert last[names.STOP_REASON] == names.STOP_PLATEAU


def test_a_run_that_reaches_its_steps_says_so(tmp_path, data_root):
    cfg = load_config("configs/smoke.yaml", [*FAST, "train.steps=20", "train.stop_on_plateau=5"])
    final = run(cfg, tmp_path / "r").final
    assert final[names.STOP_REASON] == names.STOP_STEPS and final[names.STEP] == 20


def test_a_resumed_run_stops_where_an_uninterrupted_one_does(tmp_path, data_root):
    # patience 2: evaluations at 10 (best), 20, 30 -> stop at 30; the count must survive a
    # stop at step 20 (a fresh count would run on to step 50)
    cfg = load_config(
        "configs/smoke.yaml", [*FAST, "train.stop_on_plateau=2", "train.plateau_delta=0.99"]
    )
    full = run(cfg, tmp_path / "full")
    assert full.step == 30 and full.final[names.STOP_REASON] == names.STOP_PLATEAU

    calls = {"n": 0}

    def stop_at_20() -> bool:
        calls["n"] += 1
        return calls["n"] > 20  # polled once per step: stop before step 21

    part = run(cfg, tmp_path / "part", should_stop=stop_at_20)
    assert part.stopped and part.step == 20
    resumed = run(cfg, tmp_path / "part", resume_from=part.checkpoint)
    assert resumed.step == 30 and resumed.final[names.STOP_REASON] == names.STOP_PLATEAU
    assert resumed.final[names.TEST_ERROR_GY] == full.final[names.TEST_ERROR_GY]
    # resumed from the checkpoint of the evaluation that fired: straight to the test, no steps
    ckpt = tmp_path / "part" / names.CHECKPOINTS_DIR / names.checkpoint_dirname(30)
    again = run(cfg, tmp_path / "again", resume_from=ckpt)
    assert again.step == 30 and again.final[names.STOP_REASON] == names.STOP_PLATEAU
    assert again.final[names.TEST_ERROR_GY] == full.final[names.TEST_ERROR_GY]


def test_the_sweep_console_says_a_trial_ended_on_the_plateau(capsys):
    from types import SimpleNamespace

    from sweeps.driver.console import SweepConsole

    console = SweepConsole("s", n_trials=2, parallel=1, steps=100)
    last = {names.VAL_ERROR_GY: 0.5, names.TEST_ERROR_GY: 0.25, names.STEP: 20}
    for reason in (names.STOP_PLATEAU, names.STOP_STEPS):
        trial = SimpleNamespace(
            trial_id=reason, config={"seed": 0}, last_result={**last, names.STOP_REASON: reason}
        )
        console.on_trial_complete(0, [], trial)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].endswith(
        "finished: val error 50.00 %, test error 25.00 % (plateau stop at step 20)"
    )
    assert lines[1].endswith("finished: val error 50.00 %, test error 25.00 %")  # ran its steps
