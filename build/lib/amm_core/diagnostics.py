"""What the latent path does, measured on one batch at each evaluation (docs/method.md).

A run that does not cluster usually shows why here: D blind to y and z (tiny d_grad_y/z),
means on top of each other (means_min_dist near 0), a decoder that ignores y (dec_y_sensitivity
near 0), or encoder noise that swamps the logits (enc_argmax_agree near 1/K).
Uses its own generator (seeded from the step), so it never moves the training RNG.
"""

from __future__ import annotations

import torch

from amm_core import names
from amm_core.models import AMM
from amm_core.networks import one_hot


def latent_diagnostics(model: AMM, x: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """x: one float batch (N, C, H, W) in [0, 1]. Networks in eval mode (no dropout), except
    that the encoder's y~ / z~ are sampled as in training (they are what D sees)."""
    was_training = model.training
    model.eval()
    try:
        cpu_state = torch.random.get_rng_state()
        cuda_state = torch.cuda.get_rng_state_all() if x.is_cuda else None
        torch.manual_seed(seed)  # local randomness; the training RNG is restored below
        try:
            return _measure(model, x)
        finally:
            torch.random.set_rng_state(cpu_state)
            if cuda_state is not None:
                torch.cuda.set_rng_state_all(cuda_state)
    finally:
        model.train(was_training)


def _measure(model: AMM, x: torch.Tensor) -> dict[str, float]:
    out: dict[str, float] = {}
    enc, dec, disc, prior = model.encoder, model.decoder, model.disc, model.prior
    with torch.no_grad():
        q = enc(x, sample=True)
        agree = (q.y.argmax(1) == q.y_mu.argmax(1)).float().mean()
        out[names.DIAG_ENC_AGREE] = float(agree)
        out[names.DIAG_ENC_LOGIT_SIGMA] = float(torch.exp(0.5 * q.y_logvar).mean())
    xs = x.detach().clone().requires_grad_(True)
    ys = q.y.detach().clone().requires_grad_(True)
    zs = q.z.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        gx, gy, gz = torch.autograd.grad(disc(xs, ys, zs).sum(), [xs, ys, zs], allow_unused=True)
    for key, g in ((names.DIAG_D_GRAD_X, gx), (names.DIAG_D_GRAD_Y, gy), (names.DIAG_D_GRAD_Z, gz)):
        out[key] = 0.0 if g is None else float(g.flatten(1).norm(dim=1).mean())
    with torch.no_grad():
        means, sigma = prior.means(), prior.sigma()
        k = means.shape[0]
        off = ~torch.eye(k, dtype=torch.bool, device=means.device)
        out[names.DIAG_MEANS_MIN_DIST] = float(torch.cdist(means, means)[off].min() / sigma.mean())
        n = x.shape[0]
        a = torch.randint(0, k, (n,), device=x.device)
        b = (a + torch.randint(1, k, (n,), device=x.device)) % k  # another component
        ya, yb = one_hot(a, k), one_hot(b, k)
        z = prior.mu(ya) + (ya @ sigma).unsqueeze(1) * torch.randn(
            n, means.shape[1], device=x.device
        )
        out[names.DIAG_DEC_Y_SENS] = float((dec(ya, z) - dec(yb, z)).abs().mean())
    return out
