"""Config.hash names stored runs (MLflow tags, sweep reuse, ledgers): it must not move when a
config's representation changes (e.g. `None` for "not set" where older versions wrote -1 or 0).
config_hashes.json holds the hashes of every shipped preset, alone and with the keys that had
sentinels set, and of every sweep's trials, as computed before; a deliberate change of a preset
or a sweep rewrites it with `python tests/test_config_hashes.py > tests/config_hashes.json`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from amm_core.config import Config, load_config
from sweeps.planning.cost import trial_configs
from sweeps.planning.spec import load_spec

REPO = Path(__file__).resolve().parent.parent
STORED = json.loads(Path(__file__).with_name("config_hashes.json").read_text())
# each preset also with the keys whose "not set" was a sentinel (-1 dropout, 0 learning rate)
EXTRA = {
    "": [],
    "dropout": ["model.dropout=0.1", "model.disc_dropout=0.3"],
    "lr": ["optim.lr_d=0.0001", "optim.lr_g=0.0003"],
    "zeros": ["model.enc_dropout=0.0", "model.dec_dropout=0.0", "optim.lr_d=0.0"],
}


def hashes() -> dict[str, str | list[str]]:
    out: dict[str, str | list[str]] = {}
    for p in sorted((REPO / "configs").glob("*.yaml")):
        for tag, extra in EXTRA.items():
            out[p.stem + (f"+{tag}" if tag else "")] = load_config(p, extra).hash()
    sweeps = REPO / "sweeps"
    for p in sorted(sweeps.rglob("*.yaml")):
        if "cluster" not in p.parts:
            key = "sweep:" + str(p.relative_to(sweeps))
            out[key] = sorted(c.hash() for c in trial_configs(load_spec(p)))
    return out


def test_every_preset_and_sweep_trial_keeps_its_hash():
    now = hashes()
    new, gone = sorted(set(now) - set(STORED)), sorted(set(STORED) - set(now))
    # a preset or spec added (or removed) is stored with the command of the docstring above
    assert not new and not gone, f"not in config_hashes.json: {new}; gone: {gone}"
    changed = [k for k in STORED if now[k] != STORED[k]]
    assert changed == [], changed


@pytest.mark.parametrize("old, new", [("-1", "null"), ("-1.0", "~")])
def test_an_old_sentinel_and_null_are_one_config(old, new):
    keys = ["model.dropout", "model.enc_dropout", "model.dec_dropout", "model.disc_dropout"]
    a = load_config(None, [f"{k}={old}" for k in keys] + ["optim.lr_d=0", "optim.lr_g=0"])
    b = load_config(None, [f"{k}={new}" for k in keys] + ["optim.lr_d=null"])
    assert a == b == Config() and a.model.dropout is None and a.optim.lr_g is None
    assert a.hash() == Config().hash() and a.stored_flat()["model.dropout"] == -1.0


if __name__ == "__main__":
    print(json.dumps(hashes(), indent=1, sort_keys=True))
