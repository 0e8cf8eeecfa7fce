"""The synthesis prior p(y) p(z | y): p(z | y=k) = N(mu_k, sigma_k^2 I) (docs/method.md section 2).

Means are `learned` (G_z(y), eq. 12, optionally starting at a fixed placement) or a fixed
placement: `grid18`, `table3` (the paper's), `file`, `random` (beyond the paper).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch
from torch import nn

from amm_core.config import Config
from amm_core.errors import ConfigError
from amm_core.model.archs import Arch
from amm_core.model.networks import MeanNet, one_hot

# the paper's appendix table 3 (SVHN SAMM fixed means, docs/method.md section 2), over
# z_0..z_3; the other dims are 0
TABLE3 = (
    (-3, 3, -3, -3),
    (-3, -3, 3, 3),
    (-3, 3, 3, -3),
    (3, -3, -3, -3),
    (-3, -3, 3, -3),
    (3, -3, 3, -3),
    (3, 3, 3, -3),
    (-3, 3, 3, 3),
    (3, 3, -3, -3),
    (-3, -3, -3, -3),
)

# SVHN unsupervised (sec. 4.3.1): dims 0, 1 in {-6, 0, 6}, dim 2 in {-3, 3}. Order: dim 0 slowest,
# dim 2 fastest, i.e. k = 6 * i0 + 2 * i1 + i2 (k=0: (-6, -6, -3), k=1: (-6, -6, 3), ...).
GRID18 = tuple(itertools.product((-6, 0, 6), (-6, 0, 6), (-3, 3)))


def _pad(rows: torch.Tensor, name: str, num_components: int, latent_dim: int) -> torch.Tensor:
    k, d = rows.shape
    if k != num_components:
        raise ConfigError(
            f"prior means {name} place {k} means but model.num_components is {num_components}; "
            f"allowed: model.num_components={k}"
        )
    if d > latent_dim:
        raise ConfigError(f"prior means {name} need model.latent_dim >= {d}, got {latent_dim}")
    out = torch.zeros(num_components, latent_dim)
    out[:, :d] = rows
    return out


def _read_file(path: str) -> torch.Tensor:
    p = Path(path)
    if not path or not p.is_file():
        raise ConfigError(f"prior.means_file '{path}' does not exist (a CSV or .npy K x L matrix)")
    try:
        if p.suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        else:
            arr = np.loadtxt(p, delimiter=",", ndmin=2)
    except (ValueError, OSError) as e:
        raise ConfigError(
            f"prior.means_file '{path}': cannot read a numeric matrix ({e})"
        ) from None
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim != 2 or not np.isfinite(arr).all():
        raise ConfigError(
            f"prior.means_file '{path}': expected a finite 2-D K x L matrix, got shape {arr.shape}"
        )
    return torch.from_numpy(arr).float()


def eq18_logits(
    z: torch.Tensor, means: torch.Tensor, log_prior: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """Eq. 18's log p(y=k) + log N(z; mu_k, sigma_k^2 I) up to a constant, (N, K): z (N, L),
    means (K, L), log_prior and sigma (K,). -L log sigma_k is kept (it differs between components
    when sigma is learned). Exact pairwise distances (the matmul shortcut loses ties)."""
    sq = (z[:, None, :] - means[None]).pow(2).sum(-1)
    return -0.5 * sq / sigma.square() - z.shape[1] * torch.log(sigma) + log_prior


def fixed_means(
    name: str,
    num_components: int,
    latent_dim: int,
    *,
    path: str = "",
    scale: float = 3.0,
    seed: int = 0,
) -> torch.Tensor:
    """A fixed placement of the K means as a (K, L) float tensor, zero-padded to L dims.

    grid18: 18 means, L >= 3; table3: 10 means, L >= 4; file: `path` (CSV or .npy, K rows,
    at most L columns); random: N(0, scale^2) from its own generator seeded with `seed`;
    zero: every mean at the origin, so z does not depend on y (eq. 16).
    """
    if name == "grid18":
        return _pad(torch.tensor(GRID18, dtype=torch.float32), "'grid18'", num_components,
                    latent_dim)  # fmt: skip
    if name == "table3":
        return _pad(torch.tensor(TABLE3, dtype=torch.float32), "'table3'", num_components,
                    latent_dim)  # fmt: skip
    if name == "file":
        return _pad(_read_file(path), f"file '{path}'", num_components, latent_dim)
    if name == "zero":  # p(z | y) = p(z) = N(0, I): eq. 16 with model.inference=independent
        return torch.zeros(num_components, latent_dim)
    assert name == "random", name  # prior.means / prior.init_means: choices of the config
    g = torch.Generator().manual_seed(seed)
    return torch.randn(num_components, latent_dim, generator=g) * scale


class Prior(nn.Module):
    """p(y) (uniform or class frequencies) and p(z | y=k) = N(mu_k, sigma_k^2 I).

    `learned` means are G_z(y) (MeanNet). With prior.init_means set, mu(y) = G_z(y) + y @ offset
    where the learnable offset table starts at the placement and G_z starts near 0 (weights
    N(0, 0.02)), so mu_k starts at (about) the fixed mu_k and both parts keep learning.
    Fixed placements are buffers. prior.learn_sigma adds a learnable log sigma_k (else 1).
    """

    def __init__(self, cfg: Config, arch: Arch, class_freqs: torch.Tensor | None = None):
        super().__init__()
        K, L, p = cfg.model.num_components, cfg.model.latent_dim, cfg.prior
        self.num_components, self.latent_dim = K, L

        def placement(name: str) -> torch.Tensor:
            return fixed_means(
                name, K, L, path=p.means_file, scale=p.random_scale, seed=p.random_seed
            )

        self.mean_net: MeanNet | None = None
        self.mean_offset: nn.Parameter | None = None
        if p.means == "learned":
            self.mean_net = MeanNet(arch, K, L)
            if p.init_means != "none":
                self.mean_offset = nn.Parameter(placement(p.init_means))
            self.register_buffer("fixed", None)
        else:
            self.register_buffer("fixed", placement(p.means))
        self.log_sigma = nn.Parameter(torch.zeros(K)) if p.learn_sigma else None

        if p.py == "uniform":
            probs = torch.full((K,), 1.0 / K)
        else:  # class_frequencies
            if class_freqs is None:
                raise ConfigError("prior.py 'class_frequencies' needs the training label counts")
            probs = torch.as_tensor(class_freqs, dtype=torch.float32).flatten().cpu()
            if probs.numel() != K or (probs < 0).any() or probs.sum() <= 0:
                raise ConfigError(
                    f"prior.py 'class_frequencies': got {probs.numel()} frequencies for "
                    f"model.num_components={K}; need K non-negative values with a positive sum"
                )
            probs = probs / probs.sum()
        self.register_buffer("probs", probs)

    def mu(self, y: torch.Tensor) -> torch.Tensor:
        """Means for one-hot (or soft) y (N, K) -> (N, L); G_z(y) runs in the module's mode."""
        if self.mean_net is None:
            return y @ self.fixed
        out = self.mean_net(y)
        return out + y @ self.mean_offset if self.mean_offset is not None else out

    def sigma(self) -> torch.Tensor:
        """sigma_k (K,)."""
        if self.log_sigma is None:
            return torch.ones_like(self.probs)
        return torch.exp(self.log_sigma)

    def log_py(self) -> torch.Tensor:
        """log p(y=k) (K,); -inf for a class with frequency 0."""
        return torch.log(self.probs)

    def means(self) -> torch.Tensor:
        """mu_k (K, L); a learned G_z(y) runs in eval mode (no dropout, running BN stats)."""
        eye = torch.eye(self.num_components, device=self.probs.device)
        if self.mean_net is None:
            return self.mu(eye)
        was = self.mean_net.training
        self.mean_net.eval()
        try:
            return self.mu(eye)
        finally:
            self.mean_net.train(was)

    def sample(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(y one-hot (n, K), z (n, L)) from p(y) p(z | y); the global RNG unless `generator`."""
        dev = self.probs.device
        idx = torch.multinomial(self.probs, n, replacement=True, generator=generator)
        y = one_hot(idx, self.num_components)
        eps = torch.randn(n, self.latent_dim, device=dev, generator=generator)
        z = self.mu(y) + (y @ self.sigma()).unsqueeze(1) * eps
        return y, z
