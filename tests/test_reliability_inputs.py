"""Bad spec values, huge grids, binary files and file-system failures (docs/reliability.md):
one line, exit 2 for bad input and 3 for a failing machine, nothing written first.

The spec tests call `amm` in-process; the file-system tests run `amm train` as a real process
(as an unprivileged user where the tests run as root, so that a read-only folder is read-only;
with a real file-size limit, which the kernel enforces like a full disk).
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from amm_cli.main import main as amm
from amm_core.errors import CheckpointError

REPO = Path(__file__).resolve().parent.parent
SMOKE_PRESET = REPO / "configs" / "smoke.yaml"
FAST = ["--set", "train.figures=false", "--no-progress"]


def write_spec(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(f"base: {SMOKE_PRESET}\n" + body)
    return p


@pytest.mark.parametrize(
    "body, words",
    [
        ("checkpoints_to_keep: 0\n", "key 'checkpoints_to_keep' must be 1 or more, got 0"),
        ("max_concurrent: -3\n", "key 'max_concurrent' must be 0 (no limit) or more, got -3"),
        ("max_failures: -1\n", "key 'max_failures' must be 0 (no retry) or more, got -1"),
        ("seeds: [1, 1]\n", "key 'seeds': 1 is given more than once"),
        ("grid: {loss.gp_weight: [1.0, 10.0, 1.0]}\n", "grid axis 'loss.gp_weight': 1.0 is given"),
        ("cost: {steps_per_sec: 0}\n", "key 'cost.steps_per_sec' must be > 0, got 0.0"),
    ],
)
def test_bad_spec_values_stop_plan_and_run_before_anything_is_written(
    tmp_path, capsys, monkeypatch, body, words
):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path, body)
    assert amm(["sweep", "plan", str(spec)]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code = amm(["sweep", "run", str(spec), "--name", "x", "--storage", "st"])
    assert code == 2 and words in capsys.readouterr().err
    assert not (tmp_path / "st").exists() and not (tmp_path / "mlflow.db").exists()


def test_plan_summarises_a_huge_grid_and_warns(tmp_path, capsys):
    lrs = [round(1e-5 * (i + 1), 7) for i in range(60)]
    spec = write_spec(tmp_path, f"grid: {{optim.lr: {lrs}}}\nseeds: 20\n")  # 1,200 trials
    assert amm(["sweep", "plan", str(spec)]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) < 50
    assert "trials: 1200" in out and "warning: 1,200 trials is a large sweep" in out
    assert "1180 more trials (--all lists every trial)" in out
    assert amm(["sweep", "plan", str(spec), "--all"]) == 0
    assert len(capsys.readouterr().out.splitlines()) > 1200


def test_binary_spec_and_config_files_are_one_line_errors(tmp_path, capsys):
    blob = tmp_path / "blob.yaml"
    blob.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe binary")
    assert amm(["sweep", "plan", str(blob)]) == 2
    err = capsys.readouterr().err
    assert f"sweep spec '{blob}' is not a text file" in err and len(err.splitlines()) == 1
    assert amm(["train", str(blob)]) == 2
    err = capsys.readouterr().err
    assert f"config file '{blob}' is not a text file" in err and len(err.splitlines()) == 1


def test_out_that_is_a_file_or_below_one_exits_2_before_the_data_loads(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("AMM_DATA_DIR", str(tmp_path / "no-data"))  # would fail if it loaded
    f = tmp_path / "a_file"
    f.write_text("keep me")
    assert amm(["train", str(SMOKE_PRESET), "--out", str(f), *FAST]) == 2
    assert f"--out '{f}' is a file; give a folder" in capsys.readouterr().err
    below = f / "run"
    assert amm(["train", str(SMOKE_PRESET), "--out", str(below), *FAST]) == 2
    assert f"is below the file '{f}'" in capsys.readouterr().err
    assert f.read_text() == "keep me"


@contextlib.contextmanager
def read_only_folder():
    """A folder this process cannot write in: a read-only tmpfs when we are root (root writes
    through file modes), else a folder with mode 0555."""
    base = Path(tempfile.mkdtemp(prefix="amm-ro-"))
    ro = base / "ro"
    ro.mkdir()
    mounted = False
    try:
        if os.geteuid() == 0:
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], check=True
            )
            mounted = True
        else:
            os.chmod(ro, 0o555)
        yield ro
    finally:
        if mounted:
            subprocess.run(["umount", str(ro)], check=True)
        os.chmod(ro, 0o755)
        shutil.rmtree(base)


def _amm_train(args: list[str], data_root: Path, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "AMM_DATA_DIR": str(data_root), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "amm_cli.main", "train", str(SMOKE_PRESET), *FAST, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        **kw,
    )


def error_line(err: str) -> str:
    """`amm train`'s one error line: its console's opening lines (what runs, what loads) aside."""
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("amm: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def test_read_only_out_exits_3_before_the_data_loads(data_root):
    with read_only_folder() as ro:
        t0 = time.time()
        res = _amm_train(["--out", str(ro / "run")], data_root)
        assert res.returncode == 3, res.stderr[-3000:]
        line = error_line(res.stderr)
        assert line.startswith(f"amm: environment failure: --out '{ro / 'run'}' is not writable: ")
        assert "Read-only file system" in line or "Permission denied" in line
        assert time.time() - t0 < 60 and not (ro / "run").exists()


def test_full_disk_while_checkpointing_exits_3_and_keeps_the_last_checkpoint(tmp_path, data_root):
    from amm_core.run.checkpoint import list_checkpoints, load_checkpoint

    out = tmp_path / "run"
    steps = ["--set", "train.eval_every=10", "--set", "train.log_every=10"]
    res = _amm_train(["--out", str(out), "--set", "train.steps=10", *steps], data_root)
    assert res.returncode == 0, res.stderr[-3000:]
    size = (out / "checkpoints" / "step_0000010" / "state.pt").stat().st_size

    def small_disk() -> None:  # files may not grow past half a checkpoint: as a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, size // 2))

    more = ["--out", str(out), "--resume", "--set", "train.steps=20", *steps]
    res = _amm_train(more, data_root, preexec_fn=small_disk)
    assert res.returncode == 3, res.stderr[-3000:]
    line = error_line(res.stderr)
    assert line.startswith("amm: environment failure: ") and "File too large" in line
    assert "step_0000020" in line
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [10]
    assert load_checkpoint(out / "checkpoints" / "step_0000010")["step"] == 10
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".tmp")]


@pytest.mark.parametrize(
    "body, words",
    [
        ("seeds: !!python/object/apply:os.system ['touch pwned']\n",
         "line 2, column 8: tag !!python/object/apply:os.system is not allowed"),
        ("grid: {loss.gp_weight: [1.0, 10.0}\n",
         "line 2, column 34: expected ',' or ']', but got '}'"),
        ("seeds: 2\n  max_failures: 1\n", "line 3, column 15: mapping values are not allowed here"),
    ],
)  # fmt: skip
def test_yaml_errors_and_hostile_tags_are_one_line(tmp_path, capsys, monkeypatch, body, words):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path, body)
    assert amm(["sweep", "plan", str(spec)]) == 2
    err = capsys.readouterr().err
    assert f"sweep spec '{spec}': not valid YAML at {words}" in err, err
    assert len(err.splitlines()) == 1 and "^" not in err
    config = tmp_path / "c.yaml"
    config.write_text(body)
    assert amm(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"config file '{config}': not valid YAML at line" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "pwned").exists()


class Payload:
    """Runs a command when unpickled: what a malicious state.pt holds."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_and_truncated_checkpoints_are_one_line_and_never_run(
    tmp_path, capsys, monkeypatch, data_root
):
    import pickle
    import warnings

    import torch

    from amm_core.run.checkpoint import load_checkpoint

    monkeypatch.setenv("AMM_DATA_DIR", str(data_root))
    out = tmp_path / "run"
    ckpt = out / "checkpoints" / "step_0000010"
    ckpt.mkdir(parents=True)
    marker = tmp_path / "pwned"
    torch.save({"step": 10, "model": Payload(marker)}, ckpt / "state.pt")
    assert amm(["train", str(SMOKE_PRESET), "--out", str(out), "--resume", *FAST]) == 2
    line = error_line(capsys.readouterr().err)
    assert line.startswith(f"amm: error: checkpoint '{ckpt / 'state.pt'}' refused: ")
    assert "would import posix.system" in line and "weights_only" not in line
    assert not marker.exists()

    torch.save({"step": 10, "x": torch.zeros(1000)}, ckpt / "state.pt")
    blob = (ckpt / "state.pt").read_bytes()
    (ckpt / "state.pt").write_bytes(blob[: len(blob) // 2])
    assert amm(["train", str(SMOKE_PRESET), "--out", str(out), "--resume", *FAST]) == 2
    line = error_line(capsys.readouterr().err)
    assert line.endswith("is corrupt or not a checkpoint (it is truncated or damaged)"), line

    # a plain pickle (protocol 4): torch warns about the protocol before it refuses; not shown
    (ckpt / "state.pt").write_bytes(pickle.dumps({"model": Payload(marker)}, protocol=4))
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with pytest.raises(CheckpointError, match="corrupt or not a checkpoint") as e:
            load_checkpoint(ckpt)
    assert not shown and "\n" not in str(e.value) and not marker.exists()


@pytest.mark.parametrize("damaged", ["amm_sweep.json", "amm_runs.json", "experiment_state"])
def test_a_damaged_sweep_file_is_one_line_naming_it(tmp_path, capsys, damaged):
    """A truncated file of a sweep folder: `status` and `resume` exit 2 with one line naming
    the file and the way on (the store's finished trials and the idempotent run), never a
    traceback or a silent "missing"."""
    from helpers import old_sweep

    folder = old_sweep(tmp_path, "s", cells=[{"seed": 0}])
    (folder / "amm_runs.json").write_text('{"abc": "0123"}')
    (folder / "experiment_state-2026-01-01_00-00-00.json").write_text('{"trial_data": []}')
    target = {
        "amm_sweep.json": folder / "amm_sweep.json",
        "amm_runs.json": folder / "amm_runs.json",
        "experiment_state": folder / "experiment_state-2026-01-01_00-00-00.json",
    }[damaged]
    target.write_text(target.read_text()[:9])
    for cmd in (["status", "s"], ["resume", "s"]):
        code = amm(["sweep", *cmd, "--storage", str(tmp_path)])
        err = capsys.readouterr().err
        if damaged == "amm_runs.json" and cmd[0] == "status":  # status does not read it
            continue
        assert code == 2, (cmd, err)
        assert f"sweep file '{target}' is unreadable" in err, err
        assert "trains only the cells without a finished trial" in err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_a_signal_in_the_first_instant_is_one_line_and_130(tmp_path, data_root, signame):
    """SIGINT or SIGTERM while `amm` imports, parses or measures (before any command of its own
    handles signals): one line, exit 130, never a traceback or a silent 143."""
    import signal

    env = {**os.environ, "AMM_DATA_DIR": str(data_root), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "amm_cli.main", "sweep", "plan",
           str(REPO / "sweeps" / "smoke.yaml"), "--measure"]  # fmt: skip
    # the interpreter's own start (its site module) comes before any code of amm's can handle a
    # signal: the delays count from its end, measured here (a loaded machine starts slowly)
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
    startup = 2 * (time.monotonic() - t0)
    for delay in (0.05, 0.3, 1.0, 3.0):
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        time.sleep(startup + delay)
        proc.send_signal(getattr(signal, signame))
        _, err = proc.communicate(timeout=120)
        assert (proc.returncode, err) == (130, "amm: interrupted\n"), (delay, err[-2000:])
