"""The restart phase (train.restarts, docs/method.md section 9): N starts, the one with the lowest
clustering term goes on; stop and resume inside the phase. In a sweep:
tests/test_sweep_console.py."""

import json

import pytest
import torch
import yaml
from helpers import FAST_RUN

from amm_cli.main import main as amm
from amm_core import loader, names
from amm_core.config import load_config, total_steps, trained_steps
from amm_core.errors import ConfigError
from amm_core.run.checkpoint import checkpoint_config, latest_checkpoint, load_checkpoint
from amm_core.run.restarts import train as run
from amm_core.run.state import saved_start
from amm_core.run.train import run as one_start

FAST = [*FAST_RUN, "train.gen_metrics=false", "loss.cluster_weight=1"]
PHASE = ["train.steps=40", "train.restarts=3", "train.restart_steps=20"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def fast_config(*extra):
    return load_config(None, FAST + list(extra))


def _lines(path):
    rows = [json.loads(ln) for ln in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows]


def test_the_phase_goes_on_with_the_start_of_lowest_clustering_term(tmp_path, data_root, capfd):
    reports, notes = [], []
    result = run(
        fast_config(*PHASE), tmp_path / "r", report=lambda *r: reports.append(r), note=notes.append
    )
    # the phase speaks through the note hook only (the console's, in `amm train` and a trial)
    assert "restart phase" not in capfd.readouterr().err
    assert len(notes) == 4 and notes[-1].startswith("restart phase: going on with start ")
    out = tmp_path / "r"
    starts = [out / names.STARTS_DIR / names.start_dirname(k) for k in range(3)]
    histories = [_lines(s / names.METRICS_FILE) for s in starts]
    assert [[m[names.STEP] for m in h] for h in histories] == [[10, 20]] * 3
    assert not any((s / names.FINAL_FILE).exists() for s in starts)  # starts see no test images
    scores = [h[-1][names.LOSS_CLUSTER] for h in histories]
    assert len(set(scores)) == 3, "the starts are different models"
    chosen = min(range(3), key=lambda k: scores[k])
    assert result.final[names.RESTART_CHOSEN] == chosen
    assert result.final[names.RESTART_SCORES] == ", ".join(
        f"{k}: {v:.4f}" for k, v in enumerate(scores)
    )
    errors = [h[-1][names.VAL_ERROR_GY] for h in histories]  # recorded, never chosen by
    assert result.final[names.RESTART_VAL_ERRORS] == ", ".join(
        f"{k}: {v:.4f}" for k, v in enumerate(errors)
    )
    assert "start" not in json.loads((out / names.CONFIG_FILE).read_text())["train"]
    kept = latest_checkpoint(out / names.CHECKPOINTS_DIR)
    assert saved_start(load_checkpoint(kept)) == chosen  # a resumed run knows its start
    # one time budget: the run's training seconds begin with the whole phase's
    phase_s = sum(load_checkpoint(latest_checkpoint(s / names.CHECKPOINTS_DIR))["elapsed_s"]
                  for s in starts)  # fmt: skip
    first = out / names.CHECKPOINTS_DIR / names.checkpoint_dirname(20)
    assert not first.exists()  # pruned: two newest kept
    assert load_checkpoint(kept)["elapsed_s"] > phase_s
    assert result.final[names.TRAIN_SECONDS] > phase_s
    # the run's history begins with the chosen start's, and every evaluation is reported once
    rows = _lines(out / names.METRICS_FILE)
    assert [r[names.STEP] for r in rows] == [10, 20, 30, 40]
    # the start's own stop reason is not the run's: the run goes on past its step 20
    start_rows = [{k: v for k, v in r.items() if k != names.STOP_REASON} for r in histories[chosen]]
    assert histories[chosen][-1][names.STOP_REASON] == names.STOP_STEPS
    assert rows[:2] == start_rows and [r.get(names.STOP_REASON) for r in rows[:2]] == [None] * 2
    assert [r[0].step for r in reports] == [10, 20, 30, 40, 40]
    assert [r[2] for r in reports] == [False] * 4 + [True]

    # start 0 draws what a run without restarts draws; the chosen start goes on exactly as that
    # start trained alone for all the steps would
    plain = run(fast_config("train.steps=20"), tmp_path / "plain")
    assert _lines(tmp_path / "plain" / names.METRICS_FILE) == histories[0]
    assert plain.final[names.TEST_ERROR_GY] >= 0
    alone = one_start(fast_config("train.steps=40"), tmp_path / "alone", start=chosen)
    for key in names.FINAL_METRICS:
        assert result.final[key] == alone.final[key], key


def test_a_run_stopped_in_the_phase_resumes_where_it_stopped(tmp_path, data_root, capsys):
    cfg = fast_config(*PHASE)
    full = run(cfg, tmp_path / "full").final
    calls = {"n": 0}

    def stop_in_start_1():
        calls["n"] += 1
        return calls["n"] > 30  # polled once per step: start 0 done, start 1 at step 10

    out = tmp_path / "part"
    part = run(cfg, out, should_stop=stop_in_start_1)
    assert part.stopped and part.checkpoint is None and not (out / names.CHECKPOINTS_DIR).exists()
    start1 = out / names.STARTS_DIR / names.start_dirname(1) / names.CHECKPOINTS_DIR
    assert [p.name for p in start1.iterdir()] == [names.checkpoint_dirname(10)]

    # `amm train --resume` on a folder stopped in the phase: no checkpoint of the run yet
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    args = ["train", str(tmp_path / "cfg.yaml"), "--data-dir", str(data_root), "--out", str(out)]
    assert amm(args) == 2 and "--resume" in capsys.readouterr().err  # never over a phase
    assert amm([*args, "--resume"]) == 0
    resumed = json.loads((out / names.FINAL_FILE).read_text())
    for key in (*names.FINAL_METRICS, names.RESTART_CHOSEN):
        assert resumed[key] == full[key], key
    assert _lines(out / names.METRICS_FILE) == _lines(tmp_path / "full" / names.METRICS_FILE)


@pytest.mark.parametrize(
    "extra, words",
    [
        (["train.restart_steps=15"], ["train.restart_steps", "multiple of train.eval_every"]),
        (["train.restart_steps=40"], ["train.restart_steps", "below train.steps"]),
        (["train.restarts=0"], ["train.restarts"]),
        (["loss.cluster_weight=0"], ["train.restarts", "loss.cluster_weight"]),
    ],
)
def test_bad_phase_settings_name_the_key(extra, words):
    with pytest.raises(ConfigError) as e:
        fast_config(*PHASE, *extra)
    assert all(w in str(e.value) for w in words)


def test_a_plan_counts_the_phase():
    cfg = fast_config(*PHASE)
    assert total_steps(cfg) == 40 and trained_steps(cfg) == 40 + 2 * 20
    assert trained_steps(fast_config("train.steps=40")) == 40


def test_a_budget_spent_in_the_phase_ends_the_run_there_and_says_what_it_skipped(
    tmp_path, data_root, capsys
):
    """train.max_minutes spent in start 1: starts 2 and 3 are skipped (said, with why), the run
    trains no step past the start (no second evaluation), and the console says "done" once."""
    cfg = fast_config(*PHASE, "train.max_minutes=0.0001")  # spent after the first step
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    out = tmp_path / "r"
    args = ["train", str(tmp_path / "cfg.yaml"), "--data-dir", str(data_root), "--out", str(out)]
    assert amm([*args, "--no-progress"]) == 0
    err = capsys.readouterr().err.splitlines()
    phase = [ln for ln in err if ln.startswith("amm: restart phase: ")]
    assert phase == [
        "amm: restart phase: start 1/3 trained to step 1/20 (cut short: train.max_minutes=0.0001 "
        f"spent): loss/cluster {phase[0].rsplit(' ', 1)[1]}",
        "amm: restart phase: starts 2-3 of 3 skipped: the time budget train.max_minutes=0.0001 "
        "is spent",
        "amm: restart phase: going on with start 1 (lowest loss/cluster, the only one trained)",
    ]
    assert [ln for ln in err if ln.startswith("training done")] == [
        "training done at step 1 (the time budget train.max_minutes=0.0001 was spent): "
        "evaluating on the test set ..."
    ]
    rows = _lines(out / names.METRICS_FILE)
    assert [r[names.STEP] for r in rows] == [1]  # the start's evaluation, no step after it
    assert rows[-1][names.STOP_REASON] == names.STOP_TIME_BUDGET
    final = json.loads((out / names.FINAL_FILE).read_text())
    assert final[names.STEP] == 1 and final[names.STOP_REASON] == names.STOP_TIME_BUDGET
    assert not (out / names.STARTS_DIR / names.start_dirname(1)).exists()


def test_a_full_phase_announces_the_end_once(tmp_path, data_root, capsys):
    """The chosen start's history is replayed as the run's first lines: not an end (no "took",
    no "training done") until the run's own last evaluation."""
    cfg = fast_config(*PHASE)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    args = ["train", str(tmp_path / "cfg.yaml"), "--data-dir", str(data_root)]
    assert amm([*args, "--out", str(tmp_path / "r"), "--no-progress"]) == 0
    err = capsys.readouterr().err.splitlines()
    steps = [ln for ln in err if ln.startswith("step ")]
    assert [ln.split()[1] for ln in steps if "val error" in ln] == [
        "10/40",
        "20/40",
        "30/40",
        "40/40",
    ]
    assert [ln for ln in steps if " took " in ln] == [steps[-1]]
    assert [ln for ln in err if ln.startswith("training done")] == [
        "training done at step 40 (train.steps=40 done): evaluating on the test set ..."
    ]
    assert "amm: restart phase: going on with start" in "\n".join(err)


def test_an_older_checkpoint_names_its_start_in_its_config(capsys):
    """Checkpoints written when the start was a setting (train.start) still load: the start
    read from their config, the key dropped with a note."""
    old = fast_config(*PHASE).to_dict()
    old["train"]["start"] = 2
    state = {"config": json.dumps(old)}
    loader._NOTED.discard("train.start")  # noted once a process
    assert saved_start(state) == 2 and saved_start({**state, "start": 1}) == 1
    assert checkpoint_config(state) == fast_config(*PHASE)
    assert "train.start" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="train.start"):  # a user's file: the one value only
        load_config(None, {}).replace(**{"train.start": 2})
