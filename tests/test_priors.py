"""Priors: the paper's fixed placements, file/random placements, Prior sampling and parts."""

import itertools

import numpy as np
import pytest
import torch

from amm_core.config import config_from_dict
from amm_core.errors import ConfigError
from amm_core.model.models import arch_for
from amm_core.model.priors import Prior, fixed_means

# the paper's appendix table 3, written out again here on purpose
TABLE3 = [
    [-3, 3, -3, -3],
    [-3, -3, 3, 3],
    [-3, 3, 3, -3],
    [3, -3, -3, -3],
    [-3, -3, 3, -3],
    [3, -3, 3, -3],
    [3, 3, 3, -3],
    [-3, 3, 3, 3],
    [3, 3, -3, -3],
    [-3, -3, -3, -3],
]


pytestmark = pytest.mark.usefixtures("one_thread")


def _prior(cfg, class_freqs=None):
    return Prior(cfg, arch_for(cfg), class_freqs)  # the run's architecture, as build_models


def _cfg(**prior):
    model = prior.pop("model", {})
    data = prior.pop("data", {})
    return config_from_dict({"model": {"arch": "tiny", **model}, "prior": prior, "data": data})


def test_table3_values():
    m = fixed_means("table3", 10, 64)
    assert m.shape == (10, 64) and m.dtype == torch.float32
    assert m[:, :4].tolist() == TABLE3
    assert not m[:, 4:].any()
    assert fixed_means("table3", 10, 4).tolist() == TABLE3


def test_grid18_values_and_order():
    m = fixed_means("grid18", 18, 32)
    assert m.shape == (18, 32) and not m[:, 3:].any()
    want = set(itertools.product((-6.0, 0.0, 6.0), (-6.0, 0.0, 6.0), (-3.0, 3.0)))
    assert {tuple(r) for r in m[:, :3].tolist()} == want  # 18 distinct means
    # documented order: dim 0 slowest, dim 2 fastest
    assert m[0, :3].tolist() == [-6, -6, -3] and m[1, :3].tolist() == [-6, -6, 3]
    assert m[2, :3].tolist() == [-6, 0, -3] and m[17, :3].tolist() == [6, 6, 3]


def test_placement_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"'grid18' place 18 means.*num_components is 10.*=18"):
        fixed_means("grid18", 10, 32)
    with pytest.raises(ValueError, match=r"'table3'.*latent_dim >= 4, got 3"):
        fixed_means("table3", 10, 3)
    with pytest.raises(ValueError, match="grid18.*latent_dim >= 3"):
        fixed_means("grid18", 18, 2)
    with pytest.raises(ConfigError, match="key 'prior.means'.*grid18, table3, file, random"):
        config_from_dict({"prior": {"means": "hexagon"}})  # the one check of the choice
    with pytest.raises(ConfigError, match="table3"):  # through the config too
        _prior(_cfg(means="table3", model={"num_components": 12}))


def test_file_placement(tmp_path):
    rows = np.arange(6, dtype=np.float64).reshape(3, 2)
    csv, npy = tmp_path / "mu.csv", tmp_path / "mu.npy"
    np.savetxt(csv, rows, delimiter=",")
    np.save(npy, rows)
    for path in (csv, npy):
        m = fixed_means("file", 3, 5, path=str(path))
        assert m.shape == (3, 5)
        assert m[:, :2].tolist() == rows.tolist() and not m[:, 2:].any()
    with pytest.raises(ConfigError, match=r"mu\.csv.*3 means.*num_components is 4"):
        fixed_means("file", 4, 5, path=str(csv))
    with pytest.raises(ConfigError, match="missing.npy' does not exist"):
        fixed_means("file", 3, 5, path=str(tmp_path / "missing.npy"))
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2\nx,y\n")
    with pytest.raises(ConfigError, match="bad.csv"):
        fixed_means("file", 2, 5, path=str(bad))
    nan = tmp_path / "nan.npy"
    np.save(nan, np.array([[1.0, np.nan]]))
    with pytest.raises(ConfigError, match="nan.npy.*finite"):
        fixed_means("file", 1, 5, path=str(nan))
    p = _prior(
        _cfg(means="file", means_file=str(npy), model={"num_components": 3, "latent_dim": 5})
    )
    assert p.means()[:, :2].tolist() == rows.tolist()


def test_random_placement_has_its_own_seed():
    torch.manual_seed(1)
    a = fixed_means("random", 50, 40, scale=2.0, seed=7)
    torch.manual_seed(2)
    b = fixed_means("random", 50, 40, scale=2.0, seed=7)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, fixed_means("random", 50, 40, scale=2.0, seed=8))
    assert abs(a.std().item() - 2.0) < 0.15


def test_prior_fixed_means_are_buffers_and_sample():
    p = _prior(_cfg(means="table3", model={"latent_dim": 6}))
    assert list(p.parameters()) == []
    assert "fixed" in dict(p.named_buffers())
    torch.testing.assert_close(p.means(), fixed_means("table3", 10, 6))
    torch.testing.assert_close(p.sigma(), torch.ones(10))
    torch.testing.assert_close(p.log_py(), torch.full((10,), -np.log(10.0)).float())
    y, z = p.sample(4000, generator=torch.Generator().manual_seed(3))
    assert y.shape == (4000, 10) and z.shape == (4000, 6)
    assert (y.sum(1) == 1).all() and ((y == 0) | (y == 1)).all()
    resid = z - y @ p.means()
    assert abs(resid.std().item() - 1.0) < 0.05 and abs(resid.mean().item()) < 0.05
    y2, z2 = p.sample(4000, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(z, z2)


def test_class_frequencies():
    freqs = torch.tensor([0.5, 0.3, 0.2] + [0.0] * 7)
    p = _prior(_cfg(py="class_frequencies", data={"labelled": 10}), class_freqs=freqs * 7)
    torch.testing.assert_close(p.log_py().exp(), freqs)
    y, _ = p.sample(20000)
    counts = y.sum(0) / 20000
    assert (counts - freqs).abs().max() < 0.02 and counts[3:].sum() == 0
    with pytest.raises(ConfigError, match="needs the training label counts"):
        _prior(_cfg(py="class_frequencies", data={"labelled": 10}))
    with pytest.raises(ConfigError, match="got 3 frequencies for model.num_components=10"):
        _prior(_cfg(py="class_frequencies", data={"labelled": 10}), class_freqs=torch.ones(3))


def test_learned_means_and_sigma():
    p = _prior(_cfg(learn_sigma=True, model={"latent_dim": 8}))
    names = {n for n, _ in p.named_parameters()}
    assert "log_sigma" in names and any(n.startswith("mean_net.") for n in names)
    torch.testing.assert_close(p.sigma(), torch.ones(10))
    y, z = p.sample(64)
    z.sum().backward()
    assert p.log_sigma.grad is not None and p.log_sigma.grad.abs().sum() > 0
    assert all(q.grad is not None for q in p.mean_net.parameters())
    # means(): eval mode without changing the module's mode or its BN running stats
    p.train()
    bn = next(m for m in p.modules() if isinstance(m, torch.nn.BatchNorm1d))
    stats = bn.running_mean.clone()
    m1, m2 = p.means(), p.means()
    assert p.training and p.mean_net.training
    torch.testing.assert_close(bn.running_mean, stats)
    torch.testing.assert_close(m1, m2)
    assert m1.shape == (10, 8)


@pytest.mark.parametrize("arch", ["mnist", "svhn", "tiny"])
def test_learned_means_start_at_a_placement(arch):
    dataset = "svhn" if arch == "svhn" else "mnist"
    cfg = config_from_dict(
        {
            "model": {"arch": arch, "latent_dim": 32},
            "data": {"dataset": dataset},
            "prior": {"init_means": "table3"},
        }
    )
    p = _prior(cfg)
    fixed = fixed_means("table3", 10, 32)
    assert (p.means() - fixed).abs().max() < 0.5  # G_z(y) starts near 0 (weights N(0, 0.02))
    assert (_prior(cfg.replace(**{"prior.init_means": "none"})).means()).abs().max() < 0.5
    assert p.mean_offset.requires_grad


def test_zero_placement_makes_z_independent_of_y():
    from amm_core.config import load_config

    cfg = load_config(None, ["model.arch=tiny", "model.inference=independent", "prior.means=zero"])
    prior = _prior(cfg)
    assert torch.equal(prior.means(), torch.zeros(10, cfg.model.latent_dim))
    torch.manual_seed(0)
    y, z = prior.sample(4000)
    # every component draws z from the same N(0, I)
    for k in (0, 9):
        zk = z[y.argmax(1) == k]
        assert zk.mean(0).abs().max() < 0.35 and (zk.std(0) - 1).abs().max() < 0.25
