"""What `amm train` prints: plain lines per evaluation without a terminal, the validation error in
the bar on a terminal, the end-of-run phases, a rounded final JSON; friendly overrides."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import shlex
import signal
import struct
import subprocess
import sys
import termios

from amm_cli.main import main as amm
from amm_core.run.report import Report

SMALL = ["train.steps=40", "train.eval_every=20", "train.log_every=10", "data.val_size=500"]


def _cmd(tmp_path, data_root, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "amm_cli.main",
        "train",
        "configs/smoke.yaml",
        *SMALL,
        *extra,
        "--data-dir",
        str(data_root),
        "--out",
        str(tmp_path / "run"),
    ]


def test_without_a_terminal_one_line_per_evaluation(tmp_path, data_root):
    r = subprocess.run(
        _cmd(tmp_path, data_root, "train.figures=false"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    loss = r"-?\d+\.\d{{3}}"
    line = r"step +{s}/40  D " + loss + "  G " + loss + r"  val error \d+\.\d\d %  [\d,]+ img/s  "
    lines = r.stderr.strip().splitlines()
    # the first lines, before torch and the data: what runs, what loads
    assert lines[:2] == [
        "amm train: smoke, seed 0: 40 steps",
        "loading mnist and building the model ...",
    ]
    lines = lines[2:]
    assert re.fullmatch(line.format(s=20) + r"ETA \d+s", lines[0]), lines
    assert re.fullmatch(line.format(s=40) + r"took \d+s", lines[1]), lines
    assert (
        lines[2] == "training done at step 40 (train.steps=40 done): evaluating on the test set ..."
    )
    assert len(lines) == 3, lines
    out = r.stdout
    assert out.startswith("final metrics (errors in percent; "), out
    final = json.loads(out[out.index("{") : out.index("}") + 1])
    for v in final.values():
        if isinstance(v, float):
            # at most 4 significant digits (the exponent of a tiny value like 2.09e-05 is not one)
            mantissa = f"{v:g}".split("e")[0]
            assert len(mantissa.lstrip("-0.").replace(".", "")) <= 4, final
    assert re.search(r"^test error \d+\.\d\d %  \(Bayes rule: \d+\.\d\d %\)", out, re.M), out
    assert out.splitlines()[-2] == "stopped at step 40: train.steps=40 done", out
    assert re.fullmatch(r"took \d+s in all; results: .+/run", out.splitlines()[-1]), out
    # the console shows errors in percent; final.json keeps fractions at full precision
    saved = json.loads((tmp_path / "run" / "final.json").read_text())
    assert 0 <= saved["test/error_gy"] <= 1 and "test/error_gy" not in final
    assert final["test/error_gy (%)"] == round(100 * saved["test/error_gy"], 2)
    assert final["test/nmi"] == float(f"{saved['test/nmi']:.4g}")


def test_on_a_terminal_the_bar_shows_the_validation_error(tmp_path, data_root):
    """A real pseudo-terminal: tqdm draws its bar, whose postfix carries val_err after an eval."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: amm on a 160-column terminal
        fcntl.ioctl(1, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
        os.execv(sys.executable, _cmd(tmp_path, data_root, "train.figures=false"))
    chunks = []
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    text = b"".join(chunks).decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text[-2000:]
    assert re.search(r"val_err=\d+\.\d\d%", text), text[-2000:]
    assert "step 20/40" not in text  # no plain lines when the bar is there
    assert "training done at step 40 (train.steps=40 done): evaluating on the test set ..." in text


def test_the_end_of_training_is_announced_once_with_its_reason(capsys):
    from amm_cli.progress import TrainConsole
    from amm_core.config import load_config

    cfg = load_config("configs/smoke.yaml", ["train.steps=300", "train.eval_every=100"])
    console = TrainConsole(cfg, lines=False)
    console(Report(100, 300, {"epoch": 0.1, "val/error_gy": 0.5}), None, False)
    # a line off the evaluation grid without a stop reason (a start of the restart phase cut
    # short, replayed into the run) is not the end
    console(Report(123, 300, {"epoch": 0.1}), None, False)
    assert capsys.readouterr().err == ""  # no lines asked for, not the end yet
    steps = {"stop_reason": "steps"}
    console(Report(300, 300, {"epoch": 0.3, "val/error_gy": 0.5}, steps), None, False)
    err = capsys.readouterr().err
    assert err == (
        "training done at step 300 (train.steps=300 done): evaluating on the test set and "
        "writing figures (t-SNE of 500 points; seconds) ...\n"
    )
    console(Report(300, 300, {"epoch": 0.3}, steps), None, False)
    assert capsys.readouterr().err == ""  # once
    # a time budget (train.max_minutes) ends the run off the evaluation grid: also announced
    console = TrainConsole(cfg.replace(**{"train.max_minutes": 1.0}), lines=True)
    console(Report(123, 300, {"epoch": 0.1}, {"stop_reason": "time_budget"}), None, False)
    line, done = capsys.readouterr().err.splitlines()
    assert line.startswith("step 123/300") and re.search(r"took \d+s$", line), line
    assert done.startswith(
        "training done at step 123 (the time budget train.max_minutes=1 was spent)"
    ), done


def test_the_first_lines_say_what_runs_and_what_the_budget_covers():
    from amm_cli.progress import plan_line
    from amm_core.config import load_config

    cfg = load_config("configs/mnist_amm_mixture.yaml", ["train.max_minutes=1.5"])
    assert plan_line(cfg, "mnist_amm_mixture").splitlines() == [
        "amm train: mnist_amm_mixture, seed 0: 2,000 steps after a restart phase of 2 starts of "
        "500 steps (the start of lowest clustering term goes on)",
        "time budget train.max_minutes=1.5: training, the restart phase included; the test "
        "evaluation and figures come after it",
        "loading mnist and building the model ...",
    ]


def test_one_step_count_for_the_run_the_phase_named_as_a_start():
    from amm_cli.progress import TrainConsole
    from amm_core.config import load_config

    phase = ["train.restarts=3", "train.restart_steps=1000", "loss.cluster_weight=1"]
    cfg = load_config("configs/smoke.yaml", ["train.steps=2500", "train.eval_every=500", *phase])
    console = TrainConsole(cfg, lines=True)
    # the loop's tick counts the phase's steps: 3 starts of 1,000, then the run's 1,001 to 2,500
    assert console.first_line(20, 4500, 2.0).startswith(
        "restart phase, start 1/3: step 20/1000  2.00 steps/s"
    )
    assert console.first_line(1500, 4500, 2.0).endswith(
        "(the start's next evaluation at step 1000)"
    )
    assert console.first_line(1500, 4500, 2.0).startswith("restart phase, start 2/3: step 500/1000")
    assert console.first_line(3000, 4500, 2.0).startswith(
        "restart phase, start 3/3: step 1000/1000"
    )
    line = console.first_line(3020, 4500, 2.0)  # the kept start goes on as the run: step 1,020
    assert line.startswith("step 1020/2500  2.00 steps/s"), line
    assert line.endswith("(next evaluation at step 1500)"), line
    assert console.eval_line(Report(1500, 2500, {"epoch": 1.0})).startswith("step 1500/2500")


def test_positional_overrides_and_did_you_mean(tmp_path, capsys, data_root):
    rc = amm(["train", "configs/smoke.yaml", "loss.gpweight=1", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown key 'loss.gpweight' (did you mean loss.gp_weight" in err
    rc = amm(["train", "configs/smoke.yaml", "--set", "optim.l=1", "--out", str(tmp_path / "x")])
    assert rc == 2 and "did you mean optim.lr" in capsys.readouterr().err
    rc = amm(["train", "configs/smoke.yaml", "gp_weight", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and "'gp_weight'" in err and "KEY=VALUE" in err and "--set" in err
    rc = amm(["train", "loss.gp_weight=1"])
    assert rc == 2 and "missing CONFIG" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    # accepted: positional pairs are overrides like --set
    out = tmp_path / "ok"
    args = ["train", "configs/smoke.yaml", "train.steps=4", "train.eval_every=4", "seed=7"]
    args += ["train.figures=false", "data.val_size=200", "--data-dir", str(data_root)]
    assert amm([*args, "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["seed"] == 7 and cfg["train"]["steps"] == 4


def test_first_line_early_then_a_signal_stops_and_says_how_to_continue(tmp_path, data_root):
    """The first line comes after 20 steps (no evaluation before step 100,000); SIGINT then
    stops after the step with a checkpoint, final.json says why, and the printed command
    continues the run as pasted into a shell."""
    cmd = _cmd(tmp_path, data_root, "train.steps=100000", "train.eval_every=100000")
    cmd += ["--set", "train.figures=false"]
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stderr.readline().startswith("amm train: smoke, seed 0: 100,000 steps")
    assert p.stderr.readline() == "loading mnist and building the model ...\n"
    first = p.stderr.readline()
    assert re.fullmatch(
        r"step +\d+/100000  \d+\.\d\d steps/s  ETA \S+  \(next evaluation at step 100000\)\n",
        first,
    ), first
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 130, err
    m = re.search(r"^stopped at step (\d+): signal SIGINT$", err, re.M)
    assert m, err
    step = int(m.group(1))
    final = json.loads((tmp_path / "run" / "final.json").read_text())
    assert final == {"step": step, "stop_reason": "signal", "signal": "SIGINT"}
    assert (tmp_path / "run" / "checkpoints" / f"step_{step:07d}" / "state.pt").is_file()
    again = re.search(r"^checkpoint saved; continue with: (.+)$", err, re.M).group(1)
    # the command as pasted, in a shell without the venv on PATH: one more step, then the end
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = "/usr/bin:/bin"
    r = subprocess.run(
        f"{again} --set train.steps={step + 1}",
        shell=True,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, (again, r.stderr)
    assert f"stopped at step {step + 1}: train.steps={step + 1} done" in r.stdout
    assert json.loads((tmp_path / "run" / "final.json").read_text())["stop_reason"] == "steps"
    assert shlex.split(again)[0] in (".venv/bin/amm", "amm") or again.startswith(sys.executable)


def test_the_first_line_names_the_time_budget(monkeypatch):
    from amm_cli.progress import TrainConsole
    from amm_core.config import load_config

    cfg = load_config("configs/smoke.yaml", ["train.steps=27500", "train.max_minutes=2"])
    line = TrainConsole(cfg, lines=True).first_line(20, 27500, 2.0)
    assert re.fullmatch(
        r"step    20/27500  2\.00 steps/s  ETA (1m\d\ds|2m00s) \(time budget train.max_minutes=2\)"
        r"  \(next evaluation at step 100\)",
        line,
    ), line


def test_the_eta_counts_the_restart_phase(monkeypatch):
    from amm_cli import progress
    from amm_core.config import load_config
    from amm_core.fmt import duration

    phase = ["train.restarts=3", "train.restart_steps=1000", "loss.cluster_weight=1"]
    cfg = load_config("configs/smoke.yaml", ["train.steps=2500", "train.eval_every=500", *phase])
    clock = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    console = progress.TrainConsole(cfg, lines=True)
    for step in range(1, 3001):  # the phase: 3 starts of 1,000 steps, 2 steps/s
        clock[0] += 0.5
        console.tick(step, 4500)  # the loop's tick counts the phase's steps
    # the chosen start's evaluations come now, as the run's steps 500 and 1,000: 1,500 steps
    # are left at 2 steps/s, not 1,500 run steps at the rate of 1,000 run steps in 1,500 s
    line = console.eval_line(Report(1000, 2500, {"epoch": 1.0, "val/error_gy": 0.1}))
    assert line.startswith("step 1000/2500") and line.endswith(f"ETA {duration(750)}"), line


def test_the_total_of_an_epoch_run_is_the_reports():
    from amm_cli.progress import TrainConsole
    from amm_core.config import load_config

    cfg = load_config(
        "configs/smoke.yaml", ["train.steps=0", "train.epochs=50", "train.batch_size=100"]
    )
    console = TrainConsole(cfg, lines=True)
    # the loop's report carries the run's steps: none recovered from step * batch / epoch
    for s in range(1000, 27001, 1000):
        line = console.eval_line(Report(s, 27500, {"epoch": s * 100 / 55000}))
        assert line.startswith(f"step {s:>5}/27500"), line
