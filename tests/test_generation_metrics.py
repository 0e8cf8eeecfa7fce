"""The generation and latent measures tell a collapsed model from a working one, on constructed
cases (docs/method.md section 8), and the evaluation classifier reads MNIST digits."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from amm_core import names
from amm_core.data.datasets import load_arrays
from amm_core.model.networks import EncOut
from amm_core.run.classifier import digit_classifier
from amm_core.run.diagnostics import (
    centroid_offset,
    component_purity,
    generation_metrics,
    sample_diversity,
    within_diversity,
    z_to_mean,
)


def test_sample_diversity_reads_zero_for_one_image_and_one_for_the_data():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(200, 1, 28, 28, generator=g)
    assert sample_diversity(real, real) == pytest.approx(1.0)
    collapsed = real[:1].expand(200, -1, -1, -1)
    assert sample_diversity(collapsed, real) < 1e-6


def test_within_diversity_reads_zero_for_one_image_per_component():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 4
    real = torch.rand(200, 1, 8, 8, generator=g) + labels.view(-1, 1, 1, 1)  # 4 distinct digits
    order = torch.argsort(labels, stable=True)  # samples: 4 blocks of 50, one per component
    assert within_diversity(real[order], 4, real, labels) == pytest.approx(1.0, rel=0.05)
    # each component draws one image, a different one per component: z is ignored
    per_component = real[order][::50].repeat_interleave(50, dim=0)
    assert sample_diversity(per_component, real) > 0.5  # pooled over components: looks varied
    assert within_diversity(per_component, 4, real, labels) < 1e-6


def test_component_purity_and_digits_covered():
    K, n = 10, 50
    working = torch.arange(K).repeat_interleave(n).view(K, n)  # component k draws digit k
    assert component_purity(working, 10) == (1.0, 10)
    collapsed = torch.full((K, n), 3)  # every component draws a 3
    purity, covered = component_purity(collapsed, 10)
    assert purity == 1.0 and covered == 1  # pure, but one digit: only coverage catches it
    mixed = torch.arange(K * n).remainder(10).view(K, n)  # every component draws every digit
    purity, _ = component_purity(mixed, 10)
    assert purity == pytest.approx(0.1)


def test_z_to_mean_and_centroid_offset_on_and_off_the_components():
    g = torch.Generator().manual_seed(1)
    K, L, n = 10, 64, 2000
    means = torch.randn(K, L, generator=g) * 5
    sigma = torch.ones(K)
    assign = torch.arange(n) % K
    on = means[assign] + torch.randn(n, L, generator=g)
    assert z_to_mean(on, means, assign, sigma) == pytest.approx(math.sqrt(L), rel=0.05)
    assert centroid_offset(on, means, assign, sigma) < 1.0
    off = on + 16.0 / math.sqrt(L)  # every code shifted by 16 sigma
    assert z_to_mean(off, means, assign, sigma) > math.sqrt(L) + 8
    assert centroid_offset(off, means, assign, sigma) == pytest.approx(16.0, rel=0.1)
    # codes that carry no component: all at the origin
    nowhere = torch.randn(n, L, generator=g)
    assert centroid_offset(nowhere, means, assign, sigma) > 20


# ---- generation_metrics on constructed models, judged by the real evaluation classifier -------
@pytest.fixture(scope="module")
def mnist(data_root: Path) -> dict:
    return load_arrays("mnist", data_root)


@pytest.fixture(scope="module")
def judge(data_root: Path) -> nn.Module:
    return digit_classifier("mnist", data_root, torch.device("cpu"))


def test_the_evaluation_classifier_reads_mnist(judge: nn.Module, mnist: dict):
    x = torch.from_numpy(mnist["test_x"][:2000]).float() / 255
    y = torch.from_numpy(mnist["test_y"][:2000]).long()
    with torch.no_grad():
        acc = (judge(x).argmax(1) == y).float().mean()
    assert acc > 0.96


class _Prior(nn.Module):
    num_components, latent_dim = 10, 4

    def mu(self, y: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(y), self.latent_dim)

    def sigma(self) -> torch.Tensor:
        return torch.ones(self.num_components)


class _Decoder(nn.Module):
    """Component k draws test images of digit k ("working"), its one image of digit k whatever
    z is ("ignores_z") or one fixed image ("collapsed")."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mode: str):
        super().__init__()
        self.by_digit = [images[labels == d][:200] for d in range(10)]
        self.mode = mode

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if self.mode == "collapsed":
            return self.by_digit[0][:1].expand(len(y), -1, -1, -1)
        k = y.argmax(1)
        pick = (z[:, 0].abs() * 1000).long() % 200  # z chooses the style
        if self.mode == "ignores_z":
            pick = torch.zeros_like(pick)
        rows = zip(k.tolist(), pick.tolist(), strict=True)
        return torch.stack([self.by_digit[d][i] for d, i in rows])


class _Encoder(nn.Module):
    def __init__(self, labels: torch.Tensor):
        super().__init__()
        self.labels = labels

    def forward(self, x: torch.Tensor, sample: bool = False) -> EncOut:
        y_mu = torch.nn.functional.one_hot(self.labels[: len(x)], 10).float() * 10
        z = torch.rand(len(x), 4)
        return EncOut(y_mu, y_mu, y_mu, z, z, z)


class _Model(nn.Module):
    def __init__(self, images, labels, mode):
        super().__init__()
        self.prior, self.encoder = _Prior(), _Encoder(labels)
        self.decoder = _Decoder(images, labels, mode)


def test_generation_metrics_tell_a_collapsed_decoder_from_a_working_one(judge, mnist):
    x = torch.from_numpy(mnist["test_x"][:3000]).float() / 255
    y = torch.from_numpy(mnist["test_y"][:3000]).long()
    good = generation_metrics(_Model(x, y, "working"), judge, x[:500], y[:500], 10, seed=0)
    bad = generation_metrics(_Model(x, y, "collapsed"), judge, x[:500], y[:500], 10, seed=0)
    assert set(good) == set(names.GEN_METRICS)
    assert good[names.GEN_PURITY] > 0.9 and good[names.GEN_DIGITS] == 10
    assert good[names.GEN_DIVERSITY] > 0.7 and good[names.GEN_WITHIN] > 0.7
    assert bad[names.GEN_DIVERSITY] < 1e-6 and bad[names.GEN_DIGITS] == 1
    assert bad[names.GEN_WITHIN] < 1e-6
    # reconstructions: the working decoder redraws the input's digit, the collapsed one does not
    assert good[names.GEN_RECON_AGREE] > 0.9
    assert bad[names.GEN_RECON_AGREE] < 0.2


def test_within_diversity_catches_a_decoder_that_ignores_z(judge, mnist):
    # one image per component, each of its own digit: pure, every digit covered, pooled diversity
    # high, reconstructions of the right class; only the within-component spread reads 0
    x = torch.from_numpy(mnist["test_x"][:3000]).float() / 255
    y = torch.from_numpy(mnist["test_y"][:3000]).long()
    m = generation_metrics(_Model(x, y, "ignores_z"), judge, x[:500], y[:500], 10, seed=0)
    assert m[names.GEN_PURITY] == 1.0 and m[names.GEN_DIGITS] >= 9  # the judge misreads one
    assert m[names.GEN_DIVERSITY] > 0.5 and m[names.GEN_RECON_AGREE] > 0.9
    assert m[names.GEN_WITHIN] < 1e-6
