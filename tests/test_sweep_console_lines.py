"""The sweep console's lines on hand-made trials (no Ray, no sweep): the ETA is never "-" and no
two lines repeat it; the next commands leave out what the caller just ran, name one MLflow UI
command, and `amm report` as suggested writes beside the other reports."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from helpers import old_sweep

from amm_cli.main import main as amm
from amm_core import names
from sweeps.driver import console
from sweeps.driver.console import SweepConsole, next_commands


def trial(tid: str, seed: int, step: int, status: str = "RUNNING") -> SimpleNamespace:
    last = {names.VAL_ERROR_GY: 0.5, names.STEP: step}
    return SimpleNamespace(trial_id=tid, config={"seed": seed}, last_result=last, status=status)


def evaluations(c: SweepConsole, clock: list[float], monkeypatch, capsys) -> list[str]:
    """Two trials evaluating at the same moments, as two trials of a sweep two at a time do."""
    monkeypatch.setattr(console.time, "monotonic", lambda: clock[0])
    a, b = trial("a", 0, 0), trial("b", 1, 0)
    for t in (a, b):
        c.on_trial_start(0, [a, b], t)
    for step in (100, 200, 300):
        clock[0] += 20.0
        for t in (a, b):
            result = {names.VAL_ERROR_GY: 0.5, names.STEP: step}
            c.on_trial_result(0, [a, b], t, result)
            t.last_result = result  # Tune updates it after the callbacks
    return capsys.readouterr().err.splitlines()


def test_the_eta_is_never_a_dash_nor_repeated(monkeypatch, capsys):
    lines = evaluations(SweepConsole("s", 4, 2, steps=600), [0.0], monkeypatch, capsys)
    assert len(lines) == 6 and not any("ETA -" in ln for ln in lines), lines
    etas = [m.group(1) for ln in lines if (m := re.search(r"ETA (\S+)", ln))]
    assert etas and all(x != y for x, y in zip(etas, etas[1:], strict=False)), lines
    # the second trial's line at the same moment says no ETA: it would repeat the first's
    assert "ETA" in lines[0] and "ETA" not in lines[1], lines
    # the first line knows the pace from its own result: 100 steps in 20 s, 600 a trial, so
    # 100 s left of each running trial and 120 s of each of the 2 not started, 2 at a time
    assert lines[0].endswith("ETA 3m40s"), lines[0]


def test_the_plan_prices_the_eta_before_any_pace_is_known(monkeypatch, capsys):
    c = SweepConsole("s", 4, 2, steps=600, planned_s=100.0)
    monkeypatch.setattr(console.time, "monotonic", lambda: 0.0)
    a = trial("a", 0, 0)
    c.on_trial_start(0, [a], a)
    # a result without steps (no pace yet): the plan's 100 s a trial, 4 trials two at a time
    c.on_trial_result(0, [a], a, {names.VAL_ERROR_GY: 0.5})
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith("ETA 3m20s"), line
    bare = SweepConsole("s", 4, 2, steps=600)  # no cost in the spec: no ETA, not "-"
    bare.on_trial_start(0, [a], a)
    bare.on_trial_result(0, [a], a, {names.VAL_ERROR_GY: 0.5})
    (line,) = capsys.readouterr().err.splitlines()
    assert "ETA" not in line and line.endswith("(seed=0)"), line


def test_next_leaves_out_what_was_just_run_and_names_one_mlflow_ui():
    uri = "sqlite:////tmp/x/m.db"
    every = next_commands("nb", uri, "amm-demo", "1")
    assert "amm table nb" in every and "amm report nb" in every and "sweep status nb" in every
    assert "runs/reports/nb.html" in every  # where `amm report nb` writes
    seen = next_commands("nb", uri, "amm-demo", "1", seen=("table", "report"))
    assert "table nb" not in seen and "report nb" not in seen and "sweep status nb" in seen
    for text in (every, seen):
        assert len(re.findall(r"mlflow ui", text)) == 1, text
        assert "--backend-store-uri sqlite:////tmp/x/m.db --port 5000" in text


def test_amm_sweep_next_and_the_report_default(tmp_path, monkeypatch, capsys):
    from amm_core.settings import report_path

    monkeypatch.chdir(tmp_path)
    old_sweep(tmp_path / "runs" / "sweeps", "nb", tracking_uri=f"sqlite:///{tmp_path}/m.db")
    assert amm(["sweep", "next", "nb", "--seen", "table,report"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("next:") and "table nb" not in out and "sweep status nb" in out
    assert amm(["sweep", "next", "nb", "--seen", "tabel"]) == 2
    assert "--seen tabel: expected some of table,report,status" in capsys.readouterr().err
    assert amm(["sweep", "next", "nope"]) == 2
    assert report_path("demo-1") == "runs/reports/demo-1.html"
    assert report_path("out/b.amm-sweep.json.gz") == "runs/reports/b.html"


@pytest.mark.parametrize("fmt", ["md", "text"])
def test_table_format_choices(fmt):
    from amm_cli.main import build_parser

    args = build_parser().parse_args(["table", "x", *(["--format", fmt] if fmt != "text" else [])])
    assert args.format == fmt


def test_quiet_console_drops_rays_note_of_a_dead_worker(capsys):
    """The raylet's note that a worker died (printed by Ray's error-message thread) is dropped;
    the console's own line says it. Other notes pass."""
    from ray._private import worker

    from sweeps.driver.console import quiet_logs

    before = worker.print_to_stdstream
    try:
        quiet_logs()
        quiet_logs()  # twice: one filter
        note = "A worker died or was killed while executing a task by an unexpected system error."
        worker.print_to_stdstream({"lines": [note], "pid": "raylet", "is_err": False}, False)
        worker.print_to_stdstream({"lines": ["kept note"], "pid": "raylet", "is_err": False}, False)
        out = capsys.readouterr().out
        assert "died or was killed" not in out and "kept note" in out, out
    finally:
        worker.print_to_stdstream = before


def test_each_trial_counts_to_its_own_total(monkeypatch, capsys):
    """Variants with other restart phases train other totals: each progress line counts to its
    trial's, and the plan line's budget counts the phase in."""
    from amm_core.config import load_config
    from sweeps.driver.console import budget_words

    c = SweepConsole("s", 2, 2, steps={"seed=0": 2500, "seed=1": 2600})
    monkeypatch.setattr(console.time, "monotonic", lambda: 10.0)
    a, b = trial("a", 0, 0), trial("b", 1, 0)
    for t in (a, b):
        c.on_trial_start(0, [a, b], t)
        c.on_trial_result(0, [a, b], t, {names.VAL_ERROR_GY: 0.1, names.STEP: 1000})
    lines = capsys.readouterr().err.splitlines()
    assert "step   1000/2500" in lines[0] and "step   1000/2600" in lines[1], lines
    mixture = load_config("configs/mnist_amm_mixture.yaml")
    three = mixture.replace(**{"train.restarts": 3})
    assert budget_words([mixture, three]) == f"up to {mixture.train.steps + 2 * 500:,} steps"
