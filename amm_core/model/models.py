"""AMM = encoder + decoder + discriminator + prior, built from a Config; parameter groups."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from amm_core.config import DATASET_SHAPES, Config
from amm_core.model.archs import Arch, get_arch
from amm_core.model.networks import Decoder, Discriminator, Encoder
from amm_core.model.priors import Prior


class AMM(nn.Module):
    def __init__(self, encoder: Encoder, decoder: Decoder, disc: Discriminator, prior: Prior):
        super().__init__()
        self.encoder, self.decoder, self.disc, self.prior = encoder, decoder, disc, prior

    def generator_parameters(self) -> list[nn.Parameter]:
        """G_y(x), G_z(x, .), G_x(y, z) and the prior's learned parts (G_z(y), offsets, sigma)."""
        return [*self.encoder.parameters(), *self.decoder.parameters(), *self.prior.parameters()]

    def discriminator_parameters(self) -> list[nn.Parameter]:
        return list(self.disc.parameters())


def arch_for(cfg: Config) -> Arch:
    """The tables a run's networks are built from: model.arch for data.dataset's images, with
    model.dropout, the per-network dropouts and model.dropout_impl."""
    m = cfg.model
    arch = get_arch(m.arch, DATASET_SHAPES[cfg.data.dataset], dropout=m.dropout)
    for key in ("dec_dropout", "enc_dropout", "disc_dropout"):  # None: keep model.dropout's
        if getattr(m, key) is not None:
            arch = dataclasses.replace(arch, **{key: getattr(m, key)})
    return dataclasses.replace(arch, dropout_impl=m.dropout_impl)


def build_models(cfg: Config, class_freqs: torch.Tensor | None = None) -> AMM:
    """All networks of a run from its config (weights from the global torch RNG)."""
    m, arch = cfg.model, arch_for(cfg)
    K, L = m.num_components, m.latent_dim
    return AMM(
        Encoder(
            arch, K, L, m.inference, y_noise=m.y_noise, gumbel_tau=m.gumbel_tau, z_noise=m.z_noise
        ),  # fmt: skip
        Decoder(arch, K, L, out_bias=m.dec_out_bias == "logodds"),
        Discriminator(arch, K, L),
        Prior(cfg, arch, class_freqs),
    )
