"""One training run end to end on real MNIST: files, exact resume, NaN handling, CLI exit codes."""

import json
import math
import urllib.request

import pytest
import torch
from helpers import FAST_RUN

from amm_cli.main import main as amm
from amm_cli.progress import stop_words
from amm_core import names
from amm_core.config import load_config
from amm_core.errors import TrainingError
from amm_core.run.train import run

FAST = FAST_RUN


def fast_config(*extra):
    return load_config(None, FAST + list(extra))


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _lines(path):
    rows = [json.loads(ln) for ln in path.read_text().splitlines()]
    for r in rows:
        for k in [k for k in r if k.startswith("perf/")]:
            r.pop(k)  # wall-clock figures differ between runs
    return rows


def test_run_writes_config_metrics_final_and_checkpoints(tmp_path, data_root):
    cfg = fast_config("train.steps=20", "train.keep_checkpoints=1")
    reports = []
    result = run(cfg, tmp_path / "r", report=lambda *r: reports.append(r))
    final = result.final
    out = tmp_path / "r"
    assert json.loads((out / "config.json").read_text())["model"]["arch"] == "tiny"
    rows = _lines(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [10, 20]
    assert all(0.0 <= r[names.VAL_ERROR_GY] <= 1.0 for r in rows)
    assert names.LOSS_D in rows[0] and names.LOSS_G in rows[0]
    saved = json.loads((out / "final.json").read_text())
    for key in names.FINAL_METRICS:
        assert key in saved and saved[key] == final[key]
    assert 1 <= saved[names.TEST_CLUSTERS_USED] <= 10
    # keep_checkpoints=1: only the newest survives; the reports point at real checkpoint folders
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_0000020"]
    assert len(reports) == 3 and reports[-1][0].line() == final
    # typed reports: the run's steps, numbers apart from words
    assert [(r[0].step, r[0].total_steps) for r in reports] == [(10, 20), (20, 20), (20, 20)]
    assert all(isinstance(v, int | float) for r in reports for v in r[0].metrics.values())
    assert reports[1][0].info == {names.STOP_REASON: names.STOP_STEPS} and not reports[0][0].info
    assert [r[2] for r in reports] == [False, False, True]  # the final report says so
    assert (reports[-1][1] / "state.pt").is_file() and result.checkpoint == reports[-1][1]
    assert not result.stopped and result.step == 20
    assert result.stop_reason == saved[names.STOP_REASON] == names.STOP_STEPS


def test_the_time_budget_ends_the_run_and_says_so(tmp_path, data_root):
    # 0.03 s of training: far fewer than the 100,000 steps asked for
    cfg = fast_config("train.steps=100000", "train.max_minutes=0.0005", "train.eval_every=1000")
    result = run(cfg, tmp_path / "r")
    assert 1 <= result.step < 100000 and result.stop_reason == names.STOP_TIME_BUDGET
    saved = json.loads((tmp_path / "r" / "final.json").read_text())
    assert saved[names.STOP_REASON] == names.STOP_TIME_BUDGET and saved[names.STEP] == result.step
    assert stop_words(result.stop_reason, cfg) == (
        "the time budget train.max_minutes=0.0005 was spent"
    )
    # epochs instead of steps: the machine value is the same, the words name the key that ended it
    cfg = fast_config("train.steps=0", "train.epochs=0.016")  # one batch of the 2,000 examples
    reason = run(cfg, tmp_path / "e").stop_reason
    assert reason == names.STOP_STEPS and stop_words(reason, cfg) == "train.epochs=0.016 done"


def test_resume_is_exact_on_cpu(tmp_path, data_root):
    k = 20
    cfg = fast_config(f"train.steps={2 * k}")
    full = run(cfg, tmp_path / "full").final

    calls = {"n": 0}

    def stop_at_k():
        calls["n"] += 1
        return calls["n"] > k  # polled once per step: stop before step k+1

    part = run(cfg, tmp_path / "part", should_stop=stop_at_k)
    ckpt = tmp_path / "part" / "checkpoints" / f"step_{k:07d}"
    assert part.stopped and part.step == k and part.checkpoint == ckpt and part.final == {}
    resumed = run(cfg, tmp_path / "part", resume_from=ckpt).final
    for key in names.FINAL_METRICS:
        assert resumed[key] == full[key], key
    assert _lines(tmp_path / "part" / "metrics.jsonl") == _lines(
        tmp_path / "full" / "metrics.jsonl"
    )


def test_a_resumed_run_keeps_what_is_left_of_its_time_budget(tmp_path, data_root):
    """The checkpoint carries the run's training time: resumed with a budget that time has
    already spent, the run trains one step and ends on the budget (a fresh budget would let it
    train on); final.json's perf/train_seconds counts the time before the stop too."""
    from amm_core.run.checkpoint import load_checkpoint

    cfg = fast_config("train.steps=100000", "train.eval_every=1000")
    calls = {"n": 0}

    def stop_at_20():
        calls["n"] += 1
        return calls["n"] > 20

    part = run(cfg, tmp_path / "r", should_stop=stop_at_20)
    spent = load_checkpoint(part.checkpoint)["elapsed_s"]
    assert part.step == 20 and spent > 0
    budget = 0.5 * spent / 60  # minutes: half of what the first 20 steps took
    resumed = run(cfg.replace(**{"train.max_minutes": budget}), tmp_path / "r",
                  resume_from=part.checkpoint)  # fmt: skip
    assert (resumed.step, resumed.stop_reason) == (21, names.STOP_TIME_BUDGET)
    assert resumed.final[names.TRAIN_SECONDS] > spent


def test_resume_rejects_a_different_config(tmp_path, data_root):
    run(fast_config("train.steps=10"), tmp_path / "r")
    ckpt = tmp_path / "r" / "checkpoints" / "step_0000010"
    # the message names the key and how to go on with the checkpoint's value
    with pytest.raises(ValueError, match=r"loss.gp_weight: 10.0 -> 1.0.*--set loss.gp_weight=10.0"):
        run(
            fast_config("train.steps=20", "loss.gp_weight=1"),
            tmp_path / "r",
            resume_from=ckpt,
        )
    # longer training is a legitimate change on resume
    out = run(fast_config("train.steps=20"), tmp_path / "r", resume_from=ckpt)
    assert out.step == out.final[names.STEP] == 20


def test_a_cuda_graph_checkpoint_resumes_on_a_cpu(tmp_path, data_root):
    """A CUDA-graph run saves Adam with capturable=True, which a CPU optimizer cannot step; a
    checkpoint of an older amm may carry a key this version removed (a note, no error)."""
    run(fast_config("train.steps=10"), tmp_path / "r")
    path = tmp_path / "r" / "checkpoints" / "step_0000010" / "state.pt"
    state = torch.load(path, weights_only=True)
    for opt in ("opt_g", "opt_d"):
        for group in state[opt]["param_groups"]:
            group["capturable"] = True  # as a GPU run with train.cuda_graph writes it
    old = json.loads(state["config"])
    state["config"] = json.dumps({**old, "model": {**old["model"], "removed_key": "ali"}})
    torch.save(state, path)
    out = run(fast_config("train.steps=20"), tmp_path / "r", resume_from=path.parent)
    assert out.step == 20 and math.isfinite(out.final[names.TEST_ERROR_GY])


def test_nan_loss_fails_the_run(tmp_path, data_root, monkeypatch):
    from amm_core.model.losses import AMMLoss

    real = AMMLoss.g_main
    seen = {"n": 0}

    def poisoned(self, *a, **kw):
        stats = real(self, *a, **kw)
        seen["n"] += 1
        if seen["n"] > 3:  # from the 4th step on
            stats[names.LOSS_G] = torch.tensor(float("nan"))
        return stats

    monkeypatch.setattr(AMMLoss, "g_main", poisoned)
    with pytest.raises(TrainingError, match="non-finite.*loss/G"):
        run(fast_config("train.steps=20"), tmp_path / "r")
    assert not (tmp_path / "r" / "final.json").exists()


def test_cli_train_writes_the_run(tmp_path, data_root, capsys):
    out = tmp_path / "cli"
    sets = [a for s in FAST + ["train.steps=10"] for a in ("--set", s)]
    rc = amm(
        ["train", "configs/smoke.yaml", *sets, "--data-dir", str(data_root), "--out", str(out)]
    )
    assert rc == 0
    for f in ("config.json", "metrics.jsonl", "final.json"):
        assert (out / f).is_file()
    assert str(out.resolve()) in capsys.readouterr().out
    # the same folder again without --resume: refused, nothing lost
    before = (out / "final.json").read_text()
    rc = amm(
        ["train", "configs/smoke.yaml", *sets, "--data-dir", str(data_root), "--out", str(out)]
    )
    assert rc == 2 and "--resume" in capsys.readouterr().err
    assert (out / "final.json").read_text() == before


@pytest.mark.parametrize(
    "args, words",
    [
        (["--set", "loss.lambda=3"], ["loss.lambda"]),
        (["--set", "model.inference=q9"], ["model.inference", "q1", "q2", "independent"]),
        (["--set", "train.steps=abc"], ["train.steps", "integer"]),
    ],
)
def test_cli_bad_config_exits_2(args, words, capsys, tmp_path):
    rc = amm(["train", "configs/smoke.yaml", *args, "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2
    for w in words:
        assert w in err
    assert not (tmp_path / "x").exists()


def test_cli_missing_data_exits_2_and_names_files(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = amm(
        ["train", "configs/smoke.yaml", "--data-dir", str(empty), "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "train-images-idx3-ubyte" in err and str(empty) in err
    assert list(empty.iterdir()) == []


def test_cli_download_offline_exits_2(tmp_path, capsys, monkeypatch):
    # offline for sure: every URL goes through a proxy on a closed local port
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.setattr(urllib.request, "_opener", None)
    empty = tmp_path / "empty"
    empty.mkdir()
    args = ["train", "configs/smoke.yaml", "--download", "--data-dir", str(empty)]
    rc = amm([*args, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "downloading dataset 'mnist'" in err and "failed" in err
    assert list(empty.iterdir()) == []


def test_cli_missing_config_file_exits_2(capsys):
    assert amm(["train", "configs/nope.yaml"]) == 2
    assert "configs/nope.yaml" in capsys.readouterr().err
