"""What the latent path does, measured on one batch at each evaluation (docs/method.md).

A run that does not cluster usually shows why here: D blind to y and z (tiny d_grad_y/z),
means on top of each other (means_min_dist near 0), a decoder that ignores y (dec_y_sensitivity
near 0), or encoder noise that swamps the logits (enc_argmax_agree near 1/K).
Uses its own generator (seeded from the step), so it never moves the training RNG.
"""

from __future__ import annotations

import torch

from amm_core import names
from amm_core.model.models import AMM
from amm_core.model.networks import one_hot


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
        assign = q.y_mu.argmax(1)
        out[names.DIAG_Z_TO_MEAN] = z_to_mean(q.z, means, assign, sigma)
        out[names.DIAG_CENTROID_OFFSET] = centroid_offset(q.z, means, assign, sigma)
    return out


# ---- pure measures (tensors in, a float out), tested on constructed cases ------------------
def z_to_mean(
    z: torch.Tensor, means: torch.Tensor, assign: torch.Tensor, sigma: torch.Tensor
) -> float:
    """Mean ||z_i - mu_(assign_i)|| / sigma_(assign_i). When q(z | k) matches N(mu_k, sigma_k^2 I)
    this is about sqrt(L); far above it, z~ does not sit on the component G_y picks."""
    return float(((z - means[assign]).norm(dim=1) / sigma[assign]).mean())


def centroid_offset(
    z: torch.Tensor, means: torch.Tensor, assign: torch.Tensor, sigma: torch.Tensor
) -> float:
    """Mean over the components in use of ||mean of z~ assigned to k - mu_k|| / sigma_k: about 0
    when each component's codes are centred on its mean, whatever their spread."""
    gaps = [
        float((z[assign == k].mean(0) - means[k]).norm() / sigma[k])
        for k in assign.unique().tolist()
    ]
    return sum(gaps) / len(gaps)


def sample_diversity(samples: torch.Tensor, real: torch.Tensor) -> float:
    """Per-pixel std across samples, averaged over pixels, relative to the same for real
    images: about 1 for a generator as varied as the data, 0 for one image drawn always."""
    return float(samples.float().std(0).mean() / real.float().std(0).mean().clamp_min(1e-8))


def within_diversity(
    samples: torch.Tensor, k: int, real: torch.Tensor, labels: torch.Tensor
) -> float:
    """Per-pixel std across one component's samples (samples: k blocks in component order),
    averaged over components, relative to the same across one digit's real images: about 1 when
    z varies a component's drawing as much as style varies a digit, 0 for a decoder that draws one
    image per component. sample_diversity pools the components, so a decoder that ignores z but
    draws a different image per component reads high there and only here reads 0."""
    spread = samples.float().reshape(k, -1, *samples.shape[1:]).std(1).mean()
    per_digit = [
        real[labels == c].float().std(0).mean()
        for c in labels.unique().tolist()
        if int((labels == c).sum()) > 1
    ]
    return float(spread / torch.stack(per_digit).mean().clamp_min(1e-8))


def component_purity(labels: torch.Tensor, n_classes: int) -> tuple[float, int]:
    """labels (K, n): the classifier's digit for n samples of each component. Returns the mean
    share of a component's samples in its majority digit, and how many distinct digits are the
    majority of some component (all n_classes for a mixture that draws every digit)."""
    counts = torch.stack([torch.bincount(row, minlength=n_classes) for row in labels])
    purity = float((counts.max(1).values.float() / labels.shape[1]).mean())
    return purity, int(counts.argmax(1).unique().numel())


@torch.no_grad()
def generation_metrics(
    model: AMM,
    classifier: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    seed: int = 0,
    per_component: int = 100,
) -> dict[str, float]:
    """gen/* metrics (names.GEN_METRICS): samples per component judged by the evaluation
    classifier, their diversity against the real batch x, and how often the reconstruction
    G_x(G_y(x), G_z(x)) of x is read as x's label y. Eval mode; own generator (seed)."""
    was_training = model.training
    model.eval()
    try:
        prior, dec = model.prior, model.decoder
        k = prior.num_components
        g = torch.Generator(device=x.device).manual_seed(seed)
        ys = one_hot(torch.arange(k, device=x.device).repeat_interleave(per_component), k)
        eps = torch.randn(len(ys), prior.latent_dim, device=x.device, generator=g)
        zs = prior.mu(ys) + (ys @ prior.sigma()).unsqueeze(1) * eps
        samples = dec(ys, zs).float()
        read = classifier(samples).argmax(1).view(k, per_component)
        purity, covered = component_purity(read.cpu(), n_classes)
        q = model.encoder(x, sample=False)
        recon = dec(torch.softmax(q.y_mu, dim=1), q.z_mu).float()
        agree = (classifier(recon).argmax(1) == y.to(x.device).long()).float().mean()
        return {
            names.GEN_DIVERSITY: sample_diversity(samples, x),
            names.GEN_WITHIN: within_diversity(samples, k, x, y.to(x.device)),
            names.GEN_PURITY: purity,
            names.GEN_DIGITS: float(covered),
            names.GEN_RECON_AGREE: float(agree),
        }
    finally:
        model.train(was_training)
