"""Checkpoints: weights_only round trip, atomic folders, clear errors, RNG states."""

import random

import numpy as np
import pytest
import torch

from amm_core.errors import CheckpointError, ConfigError
from amm_core.run.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    rng_state,
    save_checkpoint,
    set_rng_state,
    step_dir,
)


def training_state():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    opt = torch.optim.Adam(net.parameters(), lr=2e-4, betas=(0.5, 0.999))
    net(torch.randn(8, 4)).square().mean().backward()
    opt.step()
    state = {
        "step": 500,
        "epoch": 1.25,
        "model": net.state_dict(),
        "opt": opt.state_dict(),
        "rng": rng_state(),
        "config": {"seed": 0, "loss.gp_weight": 10.0, "device": "auto", "learn": True},
        "best": None,
    }
    return net, opt, state


def test_round_trip_weights_only(tmp_path):
    net, opt, state = training_state()
    path = save_checkpoint(step_dir(tmp_path, 500), state)
    assert path == tmp_path / "step_0000500" / "state.pt"
    back = load_checkpoint(path.parent)
    assert back["step"] == 500 and back["epoch"] == 1.25 and back["best"] is None
    assert back["config"] == state["config"]
    for k, v in net.state_dict().items():
        assert torch.equal(back["model"][k], v)
    opt2 = torch.optim.Adam(net.parameters())
    opt2.load_state_dict(back["opt"])
    assert opt2.param_groups[0]["betas"] == (0.5, 0.999)
    assert torch.equal(
        opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"]
    )
    assert load_checkpoint(path)["step"] == 500  # the file itself works too
    assert [p.name for p in tmp_path.iterdir()] == ["step_0000500"]  # no temp leftovers


def test_rejects_values_weights_only_cannot_load(tmp_path):
    with pytest.raises(TypeError, match=r"state\['extra'\]\['a'\] is a numpy.ndarray"):
        save_checkpoint(tmp_path / "step_0000001", {"extra": {"a": np.zeros(3)}})
    assert list(tmp_path.iterdir()) == []


def test_overwrite_existing_folder(tmp_path):
    d = step_dir(tmp_path, 10)
    save_checkpoint(d, {"v": 1})
    save_checkpoint(d, {"v": 2})
    assert load_checkpoint(d)["v"] == 2
    assert sorted(p.name for p in d.iterdir()) == ["state.pt"]


def test_latest_ignores_partial_and_temp_folders(tmp_path):
    for step in (100, 200, 30):
        save_checkpoint(step_dir(tmp_path, step), {"step": step})
    # a writer killed mid-save leaves a hidden temp folder; a step folder without state.pt
    tmp = tmp_path / ".tmp-step_0000300-deadbeef"
    tmp.mkdir()
    (tmp / "state.pt").write_bytes(b"partial")
    step_dir(tmp_path, 400).mkdir()
    assert latest_checkpoint(tmp_path) == step_dir(tmp_path, 200)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [30, 100, 200]
    assert latest_checkpoint(tmp_path / "nothing-here") is None
    removed = prune_checkpoints(tmp_path, keep=2)
    assert step_dir(tmp_path, 30) in removed and tmp in removed
    assert [s for s, _ in list_checkpoints(tmp_path)] == [100, 200]
    assert not tmp.exists()
    with pytest.raises(ValueError):
        prune_checkpoints(tmp_path, keep=0)


def test_corrupt_or_missing_checkpoint(tmp_path):
    d = step_dir(tmp_path, 7)
    save_checkpoint(d, {"step": 7})
    f = d / "state.pt"
    blob = f.read_bytes()
    f.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="step_0000007") as e:
        load_checkpoint(d)
    assert not isinstance(e.value, ConfigError)  # a damaged file, not a setting
    f.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(f)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "step_0000099")
    torch.save([1, 2], f)
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_checkpoint(d)
    torch.save({"x": np.zeros(2)}, f)  # a pickled object weights_only refuses
    with pytest.raises(CheckpointError, match="step_0000007"):
        load_checkpoint(d)


def draw():
    return (
        torch.rand(3).tolist(),
        random.random(),
        random.gauss(0, 1),
        np.random.rand(2).tolist(),
    )


def test_rng_state_round_trip(tmp_path):
    random.gauss(0, 1)  # leave a cached gaussian in python's state
    save_checkpoint(tmp_path / "ck", {"rng": rng_state()})
    expected = draw()
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(7)
    assert draw() != expected
    set_rng_state(load_checkpoint(tmp_path / "ck")["rng"])
    assert draw() == expected
