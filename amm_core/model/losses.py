"""AMM / SAMM losses (Algorithms 1 and 2) and the gradient penalty of eq. 17, in phases.

As stylegan2-ada's loss: each phase runs its forward pass and calls backward(); the loop zeroes
the gradients and steps the optimisers. The phases keep no state: the loop draws the tuples once
per D step and hands them to each phase, so the last D step's encoder/decoder forward also serves
the generator phase (D steps change no generator weight, so its graph stays valid):

    opt_d.zero_grad(); t = loss.tuples(x); loss.d_main(t); loss.d_gp(t, gain); opt_d.step()
    opt_g.zero_grad(); loss.g_main(t); opt_g.step()

D labels inference tuples (x, y~, z~) real and synthesis tuples (x~, y, z) fake; with d the logit,
-log sigmoid(d) = softplus(-d) and -log(1 - sigmoid(d)) = softplus(d).
  L_D   = softplus(-d_q) + softplus(d_p)      (means over the batch)
  L_dec = softplus(-d_p)                      G_x(y, z) and G_z(y)
  L_enc = softplus(d_q)                       G_y(x) and G_z(x, .)
SAMM adds the labelled game, (x_l, y_l, z~_l = G_z(x_l, y_l)) against a fresh synthesis batch;
each game's terms are scaled 1/(2M), i.e. 0.5 * (mean + mean) per game. G_y(x) learns from the
unlabelled game only: the labelled game passes y_l as `y_given`, and the encoder keeps the y
stream out of that game's graph in every inference order.

Randomness (prior samples, encoder noise, penalty alphas) uses the global torch RNG, which the
loop seeds and checkpoints. Stats are detached 0-dim tensors (no host sync per step).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from amm_core import names
from amm_core.config import Config
from amm_core.data.augment import random_affine
from amm_core.model.models import AMM
from amm_core.model.networks import one_hot
from amm_core.model.priors import eq18_logits

# the probe's step along the random direction in the VAT term's power iteration: large enough
# that x + d differs from x under bf16 (VAT's 1e-6 would round away), small beside an image's norm
VAT_XI = 1.0


def _unit(v: torch.Tensor) -> torch.Tensor:
    """Each sample of v scaled to L2 norm 1 over all its other axes."""
    return F.normalize(v.flatten(1), dim=1).view_as(v)


class Tuples(NamedTuple):
    """Inference tuples (x, y~, z~) and synthesis tuples (x~, y, z), games concatenated."""

    xq: torch.Tensor
    yq: torch.Tensor
    zq: torch.Tensor
    xp: torch.Tensor
    yp: torch.Tensor
    zp: torch.Tensor
    sizes: tuple[int, ...]  # per game batch sizes (unlabelled, then labelled), same for q and p
    y_mu: torch.Tensor | None = None  # encoder logit means on the unlabelled batch (extra terms)
    z_mu: torch.Tensor | None = None  # encoder z means on the unlabelled batch (extra terms)
    yl_mu: torch.Tensor | None = None  # SAMM: encoder logit means G_y(x_l) on the labelled batch
    y_l: torch.Tensor | None = None  # SAMM: the labelled batch's class indices

    def detach(self) -> Tuples:
        """The same tuples cut from the generator graph (what the D phases train on)."""
        return Tuples(*(v.detach() for v in self[:6]), self.sizes)


class AMMLoss:
    """The phases of one training step; `loss.penalty` was checked by the config."""

    def __init__(self, model: AMM, cfg: Config):
        self.model = model
        self.penalty = cfg.loss.penalty
        self.lc = cfg.loss

    # ---- forward pass --------------------------------------------------------------------
    def tuples(
        self, x_u: torch.Tensor, x_l: torch.Tensor | None = None, y_l: torch.Tensor | None = None
    ) -> Tuples:
        """Encoder on the float images (sampled y~, z~), decoder on prior samples, for one or two
        games, with the generator graph (g_main backpropagates through it).

        The synthesis batches of both games are drawn in one prior + decoder call (i.i.d.
        samples either way)."""
        enc, dec, prior = self.model.encoder, self.model.decoder, self.model.prior
        q = enc(x_u, sample=True)
        xq, yq, zq = [x_u], [q.y], [q.z]
        sizes, yl_mu = [x_u.shape[0]], None
        if x_l is not None:
            assert y_l is not None, "SAMM step: x_l given without its labels y_l"
            y1 = one_hot(y_l, prior.num_components).to(x_l.device)
            ql = enc(x_l, y_given=y1, sample=True)
            xq.append(x_l)
            yq.append(y1)
            zq.append(ql.z)
            sizes.append(x_l.shape[0])
            yl_mu = ql.y_mu  # G_y(x_l): the given y replaces y~ only, the logits are x's own
        yp, zp = prior.sample(sum(sizes))
        xp = dec(yp, zp)
        cat = torch.cat
        return Tuples(
            cat(xq), cat(yq), cat(zq), xp, yp, zp, tuple(sizes), q.y_mu, q.z_mu, yl_mu, y_l
        )

    def _game_mean(self, v: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:
        """Mean per game, games weighted equally (1/(2M) per term in SAMM)."""
        if len(sizes) == 1:
            return v.mean()
        return torch.stack([c.mean() for c in v.split(list(sizes))]).mean()

    def _logits(self, t: Tuples) -> tuple[torch.Tensor, torch.Tensor]:
        # Two D passes, not one on torch.cat([q, p]): D has no BatchNorm, so the maths is the
        # same, and on the CPU the two smaller passes measured 6-10 % faster per training step
        # (no concatenation copies; benchmarks/train_throughput.py, MNIST architecture).
        # float: under bf16 autocast the losses and their stats are summed in fp32
        return self.model.disc(t.xq, t.yq, t.zq).float(), self.model.disc(t.xp, t.yp, t.zp).float()

    # ---- phases: forward + backward, detached 0-dim stats by metric name -------------------
    def d_main(self, tuples: Tuples) -> dict[str, torch.Tensor]:
        """L_D on the tuples, cut from the generator graph."""
        t = tuples.detach()
        d_q, d_p = self._logits(t)
        loss = self._game_mean(F.softplus(-d_q), t.sizes) + self._game_mean(
            F.softplus(d_p), t.sizes
        )
        loss.backward()
        return {
            names.LOSS_D: loss.detach(),
            names.D_REAL: torch.sigmoid(d_q.detach()).mean(),
            names.D_FAKE: torch.sigmoid(d_p.detach()).mean(),
        }

    def d_gp(self, tuples: Tuples, gain: float = 1.0) -> dict[str, torch.Tensor]:
        """The gradient penalty (loss.penalty, on: the step skips it when off) on the tuples of
        the same D step. `gain` scales its gradient only (the lazy penalty's interval, chosen by
        `step.penalty_gains`); the stats read the same whatever the interval."""
        assert self.penalty != "none", "d_gp with loss.penalty=none (step.penalty_gains skips it)"
        t = tuples.detach()
        if self.penalty == "roth":
            loss, norm = self._roth(t)
        else:
            loss, norm = self._interpolate_penalty(t, self.penalty)
        loss = self.lc.gp_weight * loss
        if loss.requires_grad:  # False only when D ignores every penalised input
            (gain * loss).backward()
        return {names.LOSS_D_GP: loss.detach(), names.GP_NORM: norm.detach().mean()}

    def _input_grads(self, d: torch.Tensor, inputs: list[torch.Tensor]) -> torch.Tensor:
        """Per-sample gradients of D w.r.t. `inputs`, flattened and concatenated: (N, dims).
        D has no BatchNorm, so grad of sum(d) gives each sample's own gradient."""
        grads = torch.autograd.grad(d.sum(), inputs, create_graph=True, allow_unused=True)
        grads = [
            torch.zeros_like(i) if g is None else g for g, i in zip(grads, inputs, strict=True)
        ]
        return torch.cat([g.flatten(1) for g in grads], dim=1)

    def _interpolate_penalty(self, t: Tuples, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 17: mean (||grad_(x^, y^, z^) D||_2 - 1)^2 on straight lines between inference and
        synthesis tuples, one alpha ~ U(0, 1) per sample shared by x, y, z (mode "joint").
        "per_input": sum over v in (x, y, z) of (||grad_v D||_2 - 1)^2, section 4.1's reading
        (docs/method.md); "x_only": the x norm of public ALI code (a known bug; for ablations).
        The returned norm is the joint one in every mode (comparable across modes)."""
        n = t.xq.shape[0]
        a = torch.rand(n, device=t.xq.device)
        # fp32 interpolates: under bf16 autocast the synthesis side comes out of the nets in bf16
        xh = torch.lerp(t.xp.float(), t.xq.float(), a.view(n, 1, 1, 1)).requires_grad_(True)
        yh = torch.lerp(t.yp.float(), t.yq.float(), a.view(n, 1)).requires_grad_(True)
        zh = torch.lerp(t.zp.float(), t.zq.float(), a.view(n, 1)).requires_grad_(True)
        d = self.model.disc(xh, yh, zh)
        if mode == "x_only":
            norm = self._input_grads(d, [xh]).norm(2, dim=1)
            return (norm - 1.0).pow(2).mean(), norm
        g = self._input_grads(d, [xh, yh, zh])
        if mode == "joint":
            norm = g.norm(2, dim=1)
            return (norm - 1.0).pow(2).mean(), norm
        parts = g.split([xh[0].numel(), yh.shape[1], zh.shape[1]], dim=1)
        loss = sum((p.norm(2, dim=1) - 1.0).pow(2) for p in parts).mean()
        return loss, g.norm(2, dim=1).detach()

    def _roth(self, t: Tuples) -> tuple[torch.Tensor, torch.Tensor]:
        """Roth et al. 2017 JS regulariser (their eq. 22/Algorithm 1), gradients over (x, y, z):
        0.5 * (E_q[(1 - D)^2 ||grad d||^2] + E_p[D^2 ||grad d||^2]), D = sigmoid(d), with
        inference tuples as their 'real' P; lambda = loss.gp_weight plays gamma."""
        n = t.xq.shape[0]
        x = torch.cat([t.xq, t.xp]).requires_grad_(True)
        y = torch.cat([t.yq, t.yp]).requires_grad_(True)
        z = torch.cat([t.zq, t.zp]).requires_grad_(True)
        d = self.model.disc(x, y, z)
        g2 = self._input_grads(d, [x, y, z]).pow(2).sum(1)
        s = torch.sigmoid(d)
        reg = ((1 - s[:n]).pow(2) * g2[:n]).mean() + (s[n:].pow(2) * g2[n:]).mean()
        return 0.5 * reg, g2.sqrt()

    def g_main(self, t: Tuples, extra: float = 1.0) -> dict[str, torch.Tensor]:
        """L_dec + L_enc (+ extra terms, their sum times `extra`; none at 0: the lazy schedule
        of `step.extra_gain`) through the tuples' generator graph; D gets no grads."""
        disc_params = self.model.discriminator_parameters()
        flags = [p.requires_grad for p in disc_params]
        for p in disc_params:  # no D gradients in the generator phase (saves the work)
            p.requires_grad_(False)
        try:
            d_q, d_p = self._logits(t)
            dec = self._game_mean(F.softplus(-d_p), t.sizes)
            enc = self._game_mean(F.softplus(d_q), t.sizes)
            # each term weighted extra * its weight (1.0 * w == w: every-step runs unchanged)
            total, stats, g = dec + enc, {}, extra
            if g and (self.lc.info_weight > 0 or self.lc.latent_weight > 0):
                info, latent = self._cycle_terms(t)
                total = total + g * self.lc.info_weight * info + g * self.lc.latent_weight * latent
                stats[names.LOSS_G_INFO] = info.detach()
                stats[names.LOSS_G_LATENT] = latent.detach()
            if g and self.lc.recon_weight > 0:
                recon = self._recon_term(t)
                total = total + g * self.lc.recon_weight * recon
                stats[names.LOSS_G_RECON] = recon.detach()
            if g and self.lc.centroid_weight > 0:
                centroid = self._centroid_term(t)
                total = total + g * self.lc.centroid_weight * centroid
                stats[names.LOSS_G_CENTROID] = centroid.detach()
            if g and self.lc.bayes_weight > 0:
                bayes = self._bayes_term(t)
                total = total + g * self.lc.bayes_weight * bayes
                stats[names.LOSS_G_BAYES] = bayes.detach()
            if g and self.lc.label_weight > 0 and t.yl_mu is not None:
                label = F.cross_entropy(t.yl_mu.float(), t.y_l.to(t.yl_mu.device).long())
                total = total + g * self.lc.label_weight * label
                stats[names.LOSS_G_LABEL] = label.detach()
            if g and self.lc.cluster_weight > 0:
                cluster, parts = self._cluster_term(t)
                total = total + g * self.lc.cluster_weight * cluster
                stats.update(parts)
            total.backward()
        finally:
            for p, f in zip(disc_params, flags, strict=True):
                p.requires_grad_(f)
        return {
            names.LOSS_G: (dec + enc).detach(),
            names.LOSS_G_DEC: dec.detach(),
            names.LOSS_G_ENC: enc.detach(),
            **stats,
        }

    # ---- terms beyond the paper (docs/method.md, "extra terms"); off by default --------------
    def _part(self, n: int, cycle: bool = False) -> slice:
        """The first `loss.extra_batch` of n samples (all when 0): the extra terms' own passes;
        a cycle's at most `loss.cycle_batch` when set. The unlabelled batch comes first in the
        tuples, so this slice stays within it."""
        m = min(self.lc.extra_batch or n, n)
        return slice(0, min(self.lc.cycle_batch or m, m) if cycle else m)

    def _cycle_terms(self, t: Tuples) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder must recover the synthesis codes from G_x(y, z), one pass for both:
        info (ClusterGAN / InfoGAN): CE(G_y(x~) logits, y); latent: ||G_z(x~) - z||^2 / L."""
        k = self._part(t.xp.shape[0], cycle=True)
        q = self.model.encoder(t.xp[k], sample=False)
        info = F.cross_entropy(q.y_mu.float(), t.yp[k].argmax(1))
        return info, (q.z_mu.float() - t.zp[k].float()).pow(2).mean()

    def _recon_term(self, t: Tuples) -> torch.Tensor:
        """ALICE's x-cycle (Li et al. 2017): BCE of G_x(softmax(mu_y), mu_z) against x, mean per
        pixel, on the unlabelled batch; trains encoder and decoder (docs/method.md section 6)."""
        assert t.y_mu is not None and t.z_mu is not None, "recon term: tuples without codes"
        k = self._part(t.sizes[0], cycle=True)  # within the unlabelled batch
        x_u = t.xq[k]
        x_rec = self.model.decoder(torch.softmax(t.y_mu[k], dim=1), t.z_mu[k])
        return F.binary_cross_entropy(x_rec.float().clamp(1e-6, 1 - 1e-6), x_u.float())

    def _centroid_term(self, t: Tuples) -> torch.Tensor:
        """Each component's soft centroid of z~ onto its mean, leaving the spread to the game:
        sum_k w_k ||c_k - mu_k||^2 / L, c_k = sum_i p_ik mu_z(x_i) / sum_i p_ik, p = softmax of
        G_y's logits and w_k its batch share (both held fixed), mu_k the eval-mode means of
        eq. 18 (held fixed: the term moves the encoder, not the prior)."""
        assert t.y_mu is not None and t.z_mu is not None, "centroid term: tuples without codes"
        p = torch.softmax(t.y_mu.detach().float(), dim=1)
        mass = p.sum(0)
        c = (p.t() @ t.z_mu.float()) / mass.clamp_min(1e-6)[:, None]
        mu = self.model.prior.means().detach().float()
        return ((c - mu).pow(2).mean(1) * mass / mass.sum()).sum()

    def _bayes_term(self, t: Tuples) -> torch.Tensor:
        """Eq. 18 made to agree with G_y: cross-entropy of the posterior of eq. 18 on z~,
        softmax_k(log N(mu_z(x); mu_k, sigma_k^2 I) + log p(k)), against p = softmax of G_y's
        logits; p, mu_k (eval mode, as eq. 18 uses them) and sigma_k held fixed. In L = 64
        dimensions the posterior is saturated, so a code already nearest its component's mean
        costs about nothing: the term moves only the codes eq. 18 would misassign, and leaves the
        spread of the rest to the game (the centroid term's complement)."""
        assert t.y_mu is not None and t.z_mu is not None, "bayes term: tuples without codes"
        p = torch.softmax(t.y_mu.detach().float(), dim=1)
        prior = self.model.prior
        mu, sigma = prior.means().detach().float(), prior.sigma().detach().float()
        log_py = prior.log_py().clamp_min(-1e4)  # a class of frequency 0: no NaN in the CE
        logits = eq18_logits(t.z_mu.float(), mu, log_py, sigma)
        return -(p * torch.log_softmax(logits, dim=1)).sum(1).mean()

    def _cluster_term(self, t: Tuples) -> tuple[torch.Tensor, dict]:
        """IMSAT-style: KL(p(y|x) || p(y|T(x))) with p(y|x) as the target, minus
        cluster_balance * H(mean_batch p(y|x)), plus cluster_entropy * mean H(p(y|x)).
        p(y|x) = softmax of the encoder's logit means; T a small random affine transform."""
        assert t.y_mu is not None, "cluster term: tuples without the encoder's logit means"
        logp = F.log_softmax(t.y_mu.float(), dim=1)  # fp32 under bf16: loss/cluster ranks starts
        p = logp.exp()
        k = self._part(t.sizes[0])
        x_u = t.xq[k]  # the unlabelled batch (its first loss.extra_batch)
        xa = random_affine(x_u, self.lc.aug_shift, self.lc.aug_rotate, self.lc.aug_shear)
        logp_a = F.log_softmax(self.model.encoder(xa, sample=False).y_mu.float(), dim=1)
        consist = (p[k].detach() * (logp[k].detach() - logp_a)).sum(1).mean()
        mean_p = p.mean(0)
        h_marg = -(mean_p * torch.log(mean_p + 1e-8)).sum()
        h_cond = -(p * logp).sum(1).mean()
        total = consist - self.lc.cluster_balance * h_marg + self.lc.cluster_entropy * h_cond
        stats = {
            names.LOSS_CLUSTER: total,
            names.LOSS_CLUSTER_CONSIST: consist,
            names.LOSS_CLUSTER_HMARG: h_marg,
            names.LOSS_CLUSTER_HCOND: h_cond,
        }
        if self.lc.aug_vat > 0:
            vat = self._vat_term(x_u, logp[k].detach())
            total = total + vat
            stats[names.LOSS_CLUSTER] = total
            stats[names.LOSS_CLUSTER_VAT] = vat
        return total, {key: v.detach() for key, v in stats.items()}

    def _vat_term(self, x: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
        """KL(p(y|x) || p(y|x + r_adv)) with r_adv of L2 norm loss.aug_vat along the direction
        that changes p(y|x) most, found by one power iteration from a random direction (VAT,
        Miyato et al. 2018; IMSAT's augmentation). Only the encoder's parameters get gradients:
        the direction is a constant of the term."""
        p = logp.exp()
        d = _unit(torch.randn_like(x)) * VAT_XI
        with torch.enable_grad():  # the search needs a graph wherever the term is computed
            d.requires_grad_(True)
            logp_d = F.log_softmax(self.model.encoder(x + d, sample=False).y_mu.float(), dim=1)
            kl = (p * (logp - logp_d)).sum(1).mean()
            (g,) = torch.autograd.grad(kl, d)
        r = _unit(g.float()).to(x.dtype) * self.lc.aug_vat
        logp_v = F.log_softmax(self.model.encoder(x + r, sample=False).y_mu.float(), dim=1)
        return (p * (logp - logp_v)).sum(1).mean()
