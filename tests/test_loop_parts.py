"""The loop's parts on their own: the one stop policy (`run/stop.py`), the typed reports
(`run/report.py`), the training state of an older checkpoint (`run/state.py`), and torch's
deterministic switch put back after a run."""

from __future__ import annotations

import time

import torch
from helpers import FAST_RUN

from amm_core import names
from amm_core.config import load_config
from amm_core.run.checkpoint import load_checkpoint, save_checkpoint
from amm_core.run.plateau import Plateau
from amm_core.run.report import Report
from amm_core.run.stop import stop_reason
from amm_core.run.train import run


def test_the_stop_policy_names_the_first_reason_that_holds():
    done = Plateau(1)
    done.update(0.5)
    done.update(0.5)  # one evaluation without improvement: done
    past, ahead = time.monotonic() - 1, time.monotonic() + 60
    assert stop_reason(3, 10) == ""
    assert stop_reason(3, 10, deadline=ahead, plateau=Plateau(1)) == ""
    assert stop_reason(3, 10, asked=True, deadline=past) == names.STOP_SIGNAL
    assert stop_reason(10, 10, deadline=past, plateau=done) == names.STOP_STEPS
    assert stop_reason(3, 10, deadline=past, plateau=done) == names.STOP_TIME_BUDGET
    assert stop_reason(3, 10, deadline=ahead, plateau=done) == names.STOP_PLATEAU


def test_a_report_is_numbers_and_words_and_reads_back_from_its_line():
    r = Report(20, 40, {"epoch": 0.5, "val/error_gy": 0.25, "val/clusters_used": 7},
               {names.STOP_REASON: names.STOP_PLATEAU})  # fmt: skip
    assert r.line() == {"step": 20, "epoch": 0.5, "val/error_gy": 0.25, "val/clusters_used": 7,
                        "stop_reason": "plateau"}  # fmt: skip
    assert Report.from_line(r.line(), 40) == r and r.stop_reason == names.STOP_PLATEAU
    assert Report(1, 2, {}).stop_reason == ""


def test_an_older_checkpoint_resumes_and_determinism_is_put_back(tmp_path, data_root):
    """A checkpoint without the training seconds (and the plateau count) of an older amm still
    resumes, its time counted as 0; train.deterministic does not outlive the run."""
    torch.set_num_threads(1)
    cfg = load_config(None, [*FAST_RUN, "train.steps=10", "train.deterministic=true"])
    assert not torch.are_deterministic_algorithms_enabled()
    first = run(cfg, tmp_path / "r")
    assert not torch.are_deterministic_algorithms_enabled()
    state = load_checkpoint(first.checkpoint)
    assert state["elapsed_s"] > 0
    del state["elapsed_s"], state["plateau"]
    save_checkpoint(first.checkpoint, state)
    t0 = time.perf_counter()
    again = run(cfg.replace(**{"train.steps": 20}), tmp_path / "r", resume_from=first.checkpoint)
    assert again.step == 20 and again.stop_reason == names.STOP_STEPS
    assert 0 < again.final[names.TRAIN_SECONDS] <= time.perf_counter() - t0
    assert load_checkpoint(again.checkpoint)["elapsed_s"] <= time.perf_counter() - t0
