"""AMM / SAMM losses (Algorithms 1 and 2) and the gradient penalty of eq. 17, in phases.

As stylegan2-ada's loss: each phase runs its forward pass and calls backward(); the loop zeroes
the gradients and steps the optimisers:

    opt_d.zero_grad(); acc("D_main"); acc("D_gp"); opt_d.step()
    opt_g.zero_grad(); acc("G_main"); opt_g.step()

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
from amm_core.models import AMM
from amm_core.networks import one_hot

PHASES = ("D_main", "D_gp", "G_main")
PENALTIES = ("joint", "per_input", "x_only", "roth", "none")


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


def _image(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255.0 if x.dtype == torch.uint8 else x


class AMMLoss:
    def __init__(self, model: AMM, cfg: Config):
        if cfg.loss.penalty not in PENALTIES:
            raise ValueError(
                f"key 'loss.penalty': {cfg.loss.penalty!r} is not allowed; "
                f"allowed: {', '.join(PENALTIES)}"
            )
        self.model = model
        self.penalty = cfg.loss.penalty
        # lazy regularisation: the loop runs D_gp on every gp_every-th D step, weighted gp_every
        self.gp_weight = cfg.loss.gp_weight * cfg.loss.gp_every
        self.lc = cfg.loss
        self._cached: Tuples | None = None  # D_main's tuples, reused by the D_gp call after it
        # D_main's forward pass with its graph and its input batch, reused by a G_main call on the
        # same batch: one encoder/decoder forward per training step, as a straightforward
        # implementation does (D_main changes no generator weight, so the graph stays valid).
        self._g_cached: tuple[torch.Tensor, Tuples] | None = None

    # ---- forward passes ------------------------------------------------------------------
    def tuples(
        self,
        x_u: torch.Tensor,
        x_l: torch.Tensor | None = None,
        y_l: torch.Tensor | None = None,
    ) -> Tuples:
        """Encoder on the data (sampled y~, z~), decoder on prior samples, for one or two games.

        The synthesis batches of both games are drawn in one prior + decoder call (i.i.d.
        samples either way)."""
        enc, dec, prior = self.model.encoder, self.model.decoder, self.model.prior
        x_u = _image(x_u)
        q = enc(x_u, sample=True)
        xq, yq, zq = [x_u], [q.y], [q.z]
        sizes = [x_u.shape[0]]
        if x_l is not None:
            if y_l is None:
                raise ValueError("SAMM step: x_l given without its labels y_l")
            x_l = _image(x_l)
            y1 = one_hot(y_l, prior.num_components).to(x_l.device)
            ql = enc(x_l, y_given=y1, sample=True)
            xq.append(x_l)
            yq.append(y1)
            zq.append(ql.z)
            sizes.append(x_l.shape[0])
        yp, zp = prior.sample(sum(sizes))
        xp = dec(yp, zp)
        return Tuples(torch.cat(xq), torch.cat(yq), torch.cat(zq), xp, yp, zp, tuple(sizes), q.y_mu)

    def _game_mean(self, v: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:
        """Mean per game, games weighted equally (1/(2M) per term in SAMM)."""
        if len(sizes) == 1:
            return v.mean()
        return torch.stack([c.mean() for c in v.split(list(sizes))]).mean()

    def _logits(self, t: Tuples) -> tuple[torch.Tensor, torch.Tensor]:
        # Two D passes, not one on torch.cat([q, p]): D has no BatchNorm, so the maths is the
        # same, and on the CPU the two smaller passes measured 6-10 % faster per training step
        # (no concatenation copies; benchmarks/train_throughput.py, MNIST architecture).
        return self.model.disc(t.xq, t.yq, t.zq), self.model.disc(t.xp, t.yp, t.zp)

    # ---- phases --------------------------------------------------------------------------
    def accumulate_gradients(
        self,
        phase: str,
        x_u: torch.Tensor,
        x_l: torch.Tensor | None = None,
        y_l: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Forward + backward for one phase; returns detached 0-dim tensors by metric name."""
        if phase == "D_main":
            return self._d_main(x_u, x_l, y_l)
        if phase == "D_gp":
            return self._d_gp(x_u, x_l, y_l)
        if phase == "G_main":
            return self._g_main(x_u, x_l, y_l)
        raise ValueError(f"unknown loss phase {phase!r}; allowed: {', '.join(PHASES)}")

    def _d_main(self, x_u, x_l, y_l) -> dict[str, torch.Tensor]:
        g = self.tuples(x_u, x_l, y_l)  # with grad: G_main backpropagates it
        self._g_cached = (x_u, g)
        t = Tuples(*(v.detach() for v in g[:6]), g.sizes, None)
        d_q, d_p = self._logits(t)
        loss = self._game_mean(F.softplus(-d_q), t.sizes) + self._game_mean(
            F.softplus(d_p), t.sizes
        )
        loss.backward()
        self._cached = t
        return {
            names.LOSS_D: loss.detach(),
            names.D_REAL: torch.sigmoid(d_q.detach()).mean(),
            names.D_FAKE: torch.sigmoid(d_p.detach()).mean(),
        }

    def _d_gp(self, x_u, x_l, y_l) -> dict[str, torch.Tensor]:
        t, self._cached = self._cached, None
        if self.penalty == "none" or self.gp_weight == 0:
            zero = torch.zeros((), device=x_u.device)
            return {names.LOSS_D_GP: zero, names.GP_NORM: zero}
        if t is None:  # called without D_main just before: draw fresh tuples
            with torch.no_grad():
                t = self.tuples(x_u, x_l, y_l)
        if self.penalty == "roth":
            loss, norm = self._roth(t)
        else:
            loss, norm = self._interpolate_penalty(t, self.penalty)
        loss = self.gp_weight * loss
        if loss.requires_grad:  # False only when D ignores every penalised input
            loss.backward()
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

    def _g_main(self, x_u, x_l, y_l) -> dict[str, torch.Tensor]:
        disc_params = self.model.discriminator_parameters()
        flags = [p.requires_grad for p in disc_params]
        for p in disc_params:  # no D gradients in the generator phase (saves the work)
            p.requires_grad_(False)
        try:
            cached, self._g_cached = self._g_cached, None
            if cached is not None and cached[0] is x_u:
                t = cached[1]
            else:  # no D_main on this batch just before: a fresh forward pass
                t = self.tuples(x_u, x_l, y_l)
            d_q, d_p = self._logits(t)
            dec = self._game_mean(F.softplus(-d_p), t.sizes)
            enc = self._game_mean(F.softplus(d_q), t.sizes)
            total, extra = dec + enc, {}
            if self.lc.info_weight > 0:
                info = self._info_term(t)
                total = total + self.lc.info_weight * info
                extra[names.LOSS_G_INFO] = info.detach()
            if self.lc.cluster_weight > 0:
                cluster, parts = self._cluster_term(x_u, t)
                total = total + self.lc.cluster_weight * cluster
                extra.update(parts)
            total.backward()
        finally:
            for p, f in zip(disc_params, flags, strict=True):
                p.requires_grad_(f)
        return {
            names.LOSS_G: (dec + enc).detach(),
            names.LOSS_G_DEC: dec.detach(),
            names.LOSS_G_ENC: enc.detach(),
            **extra,
        }

    # ---- terms beyond the paper (docs/method.md, "extra terms"); off by default --------------
    def _info_term(self, t: Tuples) -> torch.Tensor:
        """ClusterGAN / InfoGAN: G_y must recover y from G_x(y, z): CE(G_y(x~) logits, y)."""
        xp, yp = t.xp, t.yp
        q = self.model.encoder(xp, sample=False)
        return F.cross_entropy(q.y_mu, yp.argmax(1))

    def _cluster_term(self, x_u: torch.Tensor, t: Tuples) -> tuple[torch.Tensor, dict]:
        """IMSAT-style: KL(p(y|x) || p(y|T(x))) with p(y|x) as the target, minus
        cluster_balance * H(mean_batch p(y|x)), plus cluster_entropy * mean H(p(y|x)).
        p(y|x) = softmax of the encoder's logit means; T a small random affine transform."""
        from amm_core.augment import random_affine

        if t.y_mu is None:
            raise ValueError("cluster term: tuples without the encoder's logit means")
        logp = F.log_softmax(t.y_mu, dim=1)
        p = logp.exp()
        xa = random_affine(_image(x_u), self.lc.aug_shift, self.lc.aug_rotate)
        logp_a = F.log_softmax(self.model.encoder(xa, sample=False).y_mu, dim=1)
        consist = (p.detach() * (logp.detach() - logp_a)).sum(1).mean()
        mean_p = p.mean(0)
        h_marg = -(mean_p * torch.log(mean_p + 1e-8)).sum()
        h_cond = -(p * logp).sum(1).mean()
        total = consist - self.lc.cluster_balance * h_marg + self.lc.cluster_entropy * h_cond
        return total, {
            names.LOSS_CLUSTER_CONSIST: consist.detach(),
            names.LOSS_CLUSTER_HMARG: h_marg.detach(),
            names.LOSS_CLUSTER_HCOND: h_cond.detach(),
        }
