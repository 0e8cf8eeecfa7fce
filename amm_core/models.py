"""AMM = encoder + decoder + discriminator + prior, built from a Config; parameter groups."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from amm_core.config import Config
from amm_core.errors import ConfigError
from amm_core.networks import ARCHS, Decoder, Discriminator, Encoder, get_arch
from amm_core.priors import Prior

# image shape (C, H, W) of each dataset
DATASET_SHAPES: dict[str, tuple[int, int, int]] = {
    "mnist": (1, 28, 28),
    "fashion_mnist": (1, 28, 28),
    "svhn": (3, 32, 32),
}


def input_shape(arch: str, dataset: str | None = None) -> tuple[int, int, int]:
    """The image shape an architecture takes: mnist 1x28x28, svhn 3x32x32, tiny 1x28x28 (or
    the dataset's shape: tiny also takes 3x32x32)."""
    if arch not in ARCHS:
        raise ConfigError(f"key 'model.arch': {arch!r} is not allowed; allowed: {', '.join(ARCHS)}")
    if arch == "tiny" and dataset is not None:
        return get_arch("tiny", dataset_shape(dataset)).in_shape
    return ARCHS[arch].in_shape


def dataset_shape(dataset: str) -> tuple[int, int, int]:
    if dataset not in DATASET_SHAPES:
        raise ConfigError(
            f"key 'data.dataset': {dataset!r} is not allowed; allowed: {', '.join(DATASET_SHAPES)}"
        )
    return DATASET_SHAPES[dataset]


def check_arch_dataset(arch: str, dataset: str) -> None:
    """ConfigError when model.arch cannot take data.dataset's images."""
    want, have = input_shape(arch, dataset), dataset_shape(dataset)
    if want != have:
        fits = [a for a in ARCHS if input_shape(a, dataset) == have]
        raise ConfigError(
            f"key 'model.arch': {arch!r} takes {'x'.join(map(str, want))} images but "
            f"data.dataset {dataset!r} has {'x'.join(map(str, have))}; allowed: {', '.join(fits)}"
        )


class AMM(nn.Module):
    def __init__(self, encoder: Encoder, decoder: Decoder, disc: Discriminator, prior: Prior):
        super().__init__()
        self.encoder, self.decoder, self.disc, self.prior = encoder, decoder, disc, prior

    @property
    def num_components(self) -> int:
        return self.prior.num_components

    def generator_parameters(self) -> list[nn.Parameter]:
        """G_y(x), G_z(x, .), G_x(y, z) and the prior's learned parts (G_z(y), offsets, sigma)."""
        return [
            *self.encoder.parameters(),
            *self.decoder.parameters(),
            *self.prior.parameters(),
        ]

    def discriminator_parameters(self) -> list[nn.Parameter]:
        return list(self.disc.parameters())


def build_models(cfg: Config, class_freqs: torch.Tensor | None = None) -> AMM:
    """All networks of a run from its config (weights from the global torch RNG)."""
    m = cfg.model
    check_arch_dataset(m.arch, cfg.data.dataset)
    arch = get_arch(m.arch, dataset_shape(cfg.data.dataset), dropout=m.dropout)
    for key in ("dec_dropout", "enc_dropout", "disc_dropout"):  # -1: keep model.dropout's
        if getattr(m, key) >= 0:
            arch = dataclasses.replace(arch, **{key: getattr(m, key)})
    arch = dataclasses.replace(arch, dropout_impl=m.dropout_impl)
    K, L = m.num_components, m.latent_dim
    return AMM(
        Encoder(arch, K, L, m.inference, y_noise=m.y_noise, gumbel_tau=m.gumbel_tau),
        Decoder(arch, K, L, out_bias=m.dec_out_bias == "logodds"),
        Discriminator(arch, K, L),
        Prior(cfg, class_freqs, arch=arch),
    )
