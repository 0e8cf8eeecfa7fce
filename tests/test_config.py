"""Config loading: defaults, overrides, and bad input that names the key and what is allowed."""

from pathlib import Path

import pytest

from amm_core.config import (
    Config,
    apply_overrides,
    config_from_dict,
    describe,
    field_names,
    load_config,
)
from amm_core.errors import ConfigError
from amm_core.loader import parse_override, unflatten

REPO = Path(__file__).resolve().parents[1]


def test_defaults_match_the_paper():
    cfg = Config()
    assert cfg.optim.lr == 2e-4 and cfg.optim.beta1 == 0.5
    assert cfg.model.inference == "q2" and cfg.loss.penalty == "joint"
    assert cfg.prior.means == "learned" and cfg.train.batch_size == 100


@pytest.mark.parametrize("preset", sorted((REPO / "configs").glob("*.yaml")))
def test_every_preset_loads(preset):
    cfg = load_config(preset)
    assert cfg.model.num_components >= 2


def test_presets_carry_the_papers_settings():
    mnist = load_config(REPO / "configs/mnist_amm.yaml")
    assert (mnist.model.num_components, mnist.model.latent_dim) == (10, 64)
    assert mnist.loss.gp_weight == 10.0 and mnist.prior.means == "learned"
    unsup = load_config(REPO / "configs/svhn_amm_unsup18.yaml")
    assert (unsup.model.num_components, unsup.model.latent_dim, unsup.prior.means) == (
        18,
        32,
        "grid18",
    )
    fixed = load_config(REPO / "configs/svhn_samm_fixed.yaml")
    learned = load_config(REPO / "configs/svhn_samm_learned.yaml")
    assert fixed.data.labelled == learned.data.labelled == 1000
    assert fixed.loss.gp_weight == learned.loss.gp_weight == 0.01
    assert (fixed.prior.means, learned.prior.means) == ("table3", "learned")


def test_overrides_are_typed_and_dotted():
    cfg = load_config(
        None, ["loss.gp_weight=1", "seed=3", "prior.means=table3", "train.figures=no"]
    )
    assert cfg.loss.gp_weight == 1.0 and isinstance(cfg.loss.gp_weight, float)
    assert cfg.seed == 3 and cfg.prior.means == "table3" and cfg.train.figures is False
    # exponent form without a dot is a string to PyYAML (YAML 1.1); still a number here
    cfg = load_config(None, ["optim.lr=1e-4", "loss.gp_weight=2E1"])
    assert (cfg.optim.lr, cfg.loss.gp_weight) == (1e-4, 20.0)
    with pytest.raises(ConfigError, match="key 'optim.lr': expected a number, got 'fast'"):
        load_config(None, ["optim.lr=fast"])
    with pytest.raises(ConfigError, match="key 'seed': expected an integer, got '1e3'"):
        load_config(None, ["seed=1e3"])


def test_a_stored_config_with_a_removed_key_loads_with_one_note(capsys, monkeypatch):
    """Checkpoints and a sweep's stored base, written by an older amm, may carry a key this version
    removed (a placebo setting): dropped with one note. A user's preset or override naming it is
    an error, as any unknown key."""
    import json

    from amm_core import loader
    from sweeps.planning.spec import trial_config

    monkeypatch.setattr(loader, "_NOTED", set())
    stored = Config().to_dict()
    stored["model"]["removed_key"] = "ali"
    with pytest.raises(ConfigError, match="unknown key 'model.removed_key'"):
        config_from_dict(stored)
    with pytest.raises(ConfigError, match="unknown key 'model.removed_key'"):
        apply_overrides(Config(), {"model.removed_key": "ali"})
    with loader.stored():
        assert config_from_dict(json.loads(json.dumps(stored))) == Config()
        assert apply_overrides(Config(), {"model.removed_key": "ali"}) == Config()
    flat = {**Config().flat(), "model.removed_key": "ali"}
    assert trial_config(flat, {"seed": 3}) == Config().replace(seed=3)
    note = "amm: note: key 'model.removed_key' is no longer a setting; ignored\n"
    assert capsys.readouterr().err == note  # once per process
    assert "removed_key" not in describe() and "model.removed_key" not in Config().flat()


def test_flat_round_trip_and_hash():
    cfg = load_config(None, ["loss.gp_weight=0.5"])
    assert config_from_dict(unflatten(cfg.flat())) == cfg
    assert cfg.hash() != Config().hash()
    # where the data lives does not change what is trained
    assert cfg.replace(**{"data.data_dir": "/elsewhere"}).hash() == cfg.hash()
    assert set(field_names()) == set(cfg.flat())


@pytest.mark.parametrize(
    "data, words",
    [
        ({"model": {"archh": "mnist"}}, ["model.archh", "allowed", "arch"]),
        ({"bogus": 1}, ["bogus"]),
        ({"model": {"arch": "resnet"}}, ["model.arch", "mnist", "svhn", "tiny"]),
        ({"model": {"inference": "q3"}}, ["model.inference", "q1", "q2", "independent"]),
        ({"prior": {"means": "grid"}}, ["prior.means", "grid18", "table3"]),
        ({"loss": {"gp_weight": "ten"}}, ["loss.gp_weight", "number"]),
        ({"train": {"steps": 1.5}}, ["train.steps", "integer"]),
        ({"train": {"figures": 1}}, ["train.figures", "true or false"]),
        ({"model": 3}, ["model", "mapping"]),
        ({"prior": {"means": "table3", "init_means": "grid18"}}, ["prior.init_means"]),
        ({"prior": {"py": "class_frequencies"}}, ["prior.py", "labelled"]),
        ({"prior": {"means": "file"}}, ["prior.means_file"]),
        ({"train": {"device": "tpu"}}, ["train.device", "cuda"]),
    ],
)
def test_bad_input_names_the_key(data, words):
    with pytest.raises(ConfigError) as e:
        config_from_dict(data)
    for w in words:
        assert w in str(e.value)


def test_bad_overrides_and_files(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'gp_weight'.*loss.gp_weight"):
        apply_overrides(Config(), {"gp_weight": 1.0})
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("loss.gp_weight")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)


def test_describe_lists_every_key_with_choices():
    text = describe()
    for key in field_names():
        assert key + " = " in text
    assert "q2, q1, independent" in text
