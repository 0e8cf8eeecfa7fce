"""Presets that inherit (`base:`): every shipped preset resolves to the config it had before its
file was rewritten to state only what it changes (the snapshot in presets_snapshot.json: the
config hash names the trials of running studies), and `base:` chains, cycles and bad keys.

A deliberate change of a preset's values, or a new config key, changes the snapshot too:
rewrite it with `python tests/test_presets.py` and say so in the commit."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from amm_cli.main import main as amm
from amm_core.config import Config, load_config, read_preset
from amm_core.errors import ConfigError
from amm_core.loader import flatten
from amm_core.presets import base_path
from sweeps.planning.spec import load_spec

REPO = Path(__file__).resolve().parent.parent
PRESETS = sorted((REPO / "configs").glob("*.yaml"))
SNAPSHOT_FILE = Path(__file__).with_name("presets_snapshot.json")
SNAPSHOT = json.loads(SNAPSHOT_FILE.read_text())


def test_the_snapshot_covers_every_shipped_preset():
    assert sorted(p.stem for p in PRESETS) == sorted(SNAPSHOT)


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_a_preset_resolves_to_its_snapshot(preset):
    cfg = load_config(preset)
    assert cfg.to_dict() == SNAPSHOT[preset.stem]["config"]
    assert cfg.hash() == SNAPSHOT[preset.stem]["hash"]


def test_a_spec_on_a_chained_preset_builds_the_same_trial():
    """The lambda study's base is the mixture preset with learned means (on the mixture preset,
    itself on the paper's): its lambda=10 trial is that preset unchanged, so its hash is the
    preset's snapshot hash; and that preset is the mixture preset as the studies ran it (the
    hash their exported trials carry)."""
    spec = load_spec(REPO / "sweeps" / "studies" / "lambda.yaml")
    cfg = spec.trial_config({"loss.gp_weight": 10.0, "seed": 0})
    assert cfg.hash() == SNAPSHOT["mnist_amm_mixture_learned"]["hash"] == "a87088200fdf"
    assert SNAPSHOT["mnist_amm_mixture"]["hash"] != "a87088200fdf"


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_a_preset_states_only_what_it_changes(preset):
    """No key of a preset's own file restates the value it would get anyway (from its base, or
    the defaults)."""
    own = yaml.safe_load(preset.read_text())
    base = own.pop("base", None)
    inherited = flatten(read_preset(base_path(preset, base, "preset file"))) if base else {}
    defaults = Config().flat()
    same = [k for k, v in flatten(own).items() if inherited.get(k, defaults[k]) == v]
    assert same == [], f"{preset.name} restates {same}"


def write(folder: Path, name: str, text: str) -> Path:
    p = folder / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_base_chains_merge_section_by_section(tmp_path):
    """A chain of three files and a shipped name at its root: each file's keys on top of its
    base's, key by key within a section; a base path is relative to the file naming it."""
    write(tmp_path, "lib/mid.yaml", "base: smoke\nloss: {gp_weight: 1.0}\ntrain: {steps: 40}\n")
    top = write(tmp_path, "top.yaml", "base: lib/mid.yaml\ntrain: {eval_every: 20}\n")
    cfg = load_config(top)
    smoke = load_config(REPO / "configs" / "smoke.yaml")
    assert (cfg.train.steps, cfg.train.eval_every, cfg.loss.gp_weight) == (40, 20, 1.0)
    # the rest from the shipped root, section by section (smoke's loss.gp_every stays)
    assert cfg.loss.gp_every == smoke.loss.gp_every == 1 and cfg.model == smoke.model
    assert cfg.replace(**{"train.steps": 300, "train.eval_every": 100, "loss.gp_weight": 10.0}) == (
        smoke
    )
    # overrides still go on top of the whole chain
    assert load_config(top, ["train.steps=60"]).train.steps == 60


def test_a_cycle_of_bases_names_the_files(tmp_path, capsys):
    a = write(tmp_path, "a.yaml", "base: b.yaml\n")
    write(tmp_path, "b.yaml", "base: a.yaml\nseed: 1\n")
    with pytest.raises(ConfigError, match="cycle") as e:
        load_config(a)
    assert re.search(r"a\.yaml -> \S*b\.yaml -> \S*a\.yaml", str(e.value)), e.value
    itself = write(tmp_path, "self.yaml", "base: self.yaml\n")
    with pytest.raises(ConfigError, match=r"cycle: \S*self\.yaml -> \S*self\.yaml"):
        load_config(itself)
    assert amm(["train", str(a), "--out", str(tmp_path / "run")]) == 2
    assert "b.yaml" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_a_bad_key_names_the_file_that_holds_it(tmp_path, capsys):
    """An unknown key (or a bad value) in a base is named with the base's file, not the file
    that names the base; `amm train` exits 2 with one line and writes nothing."""
    base = write(tmp_path, "base.yaml", "base: smoke\nloss: {gp_wieght: 1.0}\n")
    top = write(tmp_path, "top.yaml", "base: base.yaml\n")
    msg = f"config file '{base}': unknown key 'loss.gp_wieght' (did you mean loss.gp_weight?)"
    with pytest.raises(ConfigError, match=re.escape(msg)):
        load_config(top)
    assert amm(["train", str(top), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
    write(tmp_path, "base.yaml", "model: {arch: resnet}\n")
    with pytest.raises(ConfigError, match=r"base\.yaml': key 'model.arch': 'resnet' is not allow"):
        load_config(top)
    # a rule across keys is checked on the whole chain, named by the file loaded
    write(tmp_path, "base.yaml", "train: {restarts: 3}\n")
    with pytest.raises(ConfigError, match=r"top\.yaml': key 'train.restarts': 3 chooses"):
        load_config(top)
    # and the key 'base' itself: a file that is neither a path nor a shipped name, or no string
    for bad, words in (
        ("nope.yaml", "does not exist; paths are relative to the preset file"),
        ("[1, 2]", "key 'base': expected a preset"),
    ):
        write(tmp_path, "top.yaml", f"base: {bad}\n")
        with pytest.raises(ConfigError, match=re.escape(words)):
            load_config(top)


if __name__ == "__main__":  # rewrite the snapshot from the presets as they resolve now
    snap = {
        p.stem: {"hash": load_config(p).hash(), "config": load_config(p).to_dict()} for p in PRESETS
    }
    SNAPSHOT_FILE.write_text(json.dumps(snap, indent=1, sort_keys=True) + "\n")
