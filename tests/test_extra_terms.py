"""The extra terms' cost keys (docs/method.md section 6): their gain on a step
(`loss.extra_every`), their own passes on part of the batch (`loss.extra_batch`), and fp32
losses and stats under bf16 autocast."""

import pytest
import torch

from amm_core import names
from amm_core.config import config_from_dict
from amm_core.model.losses import AMMLoss, Tuples
from amm_core.model.models import build_models
from amm_core.run.step import Stats, make_optimizers, training_step

L = 8

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(n=8):
    return torch.rand(n, 1, 28, 28)


def _extras(**loss_keys):
    """The tiny model with the mixture preset's extra terms (dropout off: exact replays)."""
    keys = {"recon_weight": 10.0, "info_weight": 1.0, "latent_weight": 0.1, "cluster_weight": 3.0}
    cfg = config_from_dict(
        {
            "model": {"arch": "tiny", "latent_dim": L, "dropout": 0.0},
            "loss": {**keys, **loss_keys},
        }
    )
    model = build_models(cfg)
    return cfg, model, AMMLoss(model, cfg)


def test_extra_gain_schedule():
    """loss.extra_every N: the extra terms on every N-th step with gain N (1: every step)."""
    from amm_core.run.step import extra_gain

    cfg, _, _ = _extras()
    assert [extra_gain(cfg, s) for s in range(4)] == [1.0] * 4
    cfg, _, _ = _extras(extra_every=2)
    assert [extra_gain(cfg, s) for s in range(4)] == [2.0, 0.0, 2.0, 0.0]


def test_the_extra_gain_scales_the_extra_terms_only():
    """g_main(t, gain): gain 0 is the paper's game alone (no extra stats), gain 2 adds twice
    the extra terms' gradient that gain 1 adds."""
    _, model, loss = _extras()
    params = model.generator_parameters()

    def fresh():
        torch.manual_seed(0)
        return loss.tuples(_batch(16))

    out = {}
    for gain in (0.0, 1.0, 2.0):
        t = fresh()
        for p in params:
            p.grad = None
        torch.manual_seed(1)
        stats = loss.g_main(t, gain)
        out[gain] = ([torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params],
                     stats)  # fmt: skip
    assert names.LOSS_CLUSTER not in out[0.0][1] and names.LOSS_G_RECON not in out[0.0][1]
    assert names.LOSS_CLUSTER in out[1.0][1]
    for g0, g1, g2 in zip(out[0.0][0], out[1.0][0], out[2.0][0], strict=True):
        torch.testing.assert_close(g2 - g0, 2 * (g1 - g0), rtol=1e-3, atol=1e-6)


def test_extra_batch_runs_the_extra_passes_on_the_first_images():
    """loss.extra_batch N: the x-cycle, the cycles and the clustering term's augmented pass
    see the first N images (and synthesis samples) of the step's batch, as if it had N."""
    _, _, half = _extras(extra_batch=8)
    _, model, whole = _extras()
    half.model = model  # the same networks
    torch.manual_seed(0)
    t = whole.tuples(_batch(16))
    cut = Tuples(*(v[:8] for v in t[:6]), (8,), t.y_mu[:8], t.z_mu[:8])
    torch.testing.assert_close(half._recon_term(t), whole._recon_term(cut))
    for a, b in zip(half._cycle_terms(t), whole._cycle_terms(cut), strict=True):
        torch.testing.assert_close(a, b)
    torch.manual_seed(3)
    consist_half = half._cluster_term(t)[1][names.LOSS_CLUSTER_CONSIST]
    torch.manual_seed(3)
    consist_cut = whole._cluster_term(cut)[1][names.LOSS_CLUSTER_CONSIST]
    torch.testing.assert_close(consist_half, consist_cut)
    # the batch terms (balance, confidence) still read the whole batch
    h_half = half._cluster_term(t)[1][names.LOSS_CLUSTER_HMARG]
    assert not torch.allclose(h_half, whole._cluster_term(cut)[1][names.LOSS_CLUSTER_HMARG])


def test_bf16_stats_are_fp32_so_the_clustering_term_ranks_starts():
    """Under train.amp=bf16 the losses and their stats are fp32: a bf16 loss/cluster keeps 3
    digits (-2.1719 reads -2.1719, not -2.171875), too few to rank restart starts."""
    from amm_core.run.accel import autocast

    cfg, model, loss = _extras()
    cfg = cfg.replace(**{"train.amp": "bf16"})
    opt_g, opt_d = make_optimizers(model, cfg)
    with autocast(cfg, torch.device("cpu")):
        stats = training_step(loss, opt_d, opt_g, _batch())
    for key in (names.LOSS_CLUSTER, names.LOSS_G, names.LOSS_D, names.LOSS_G_RECON):
        assert stats[key].dtype == torch.float32, key
    s = Stats()
    for v in (-2.1719, -2.1722):
        s.add({names.LOSS_CLUSTER: torch.tensor(v, dtype=torch.bfloat16)})
    # summed in fp32: the mean of the two bf16 roundings, not a bf16 sum of them
    assert s.sums[names.LOSS_CLUSTER].dtype == torch.float32


def test_vat_term_off_by_default_and_logged_when_on():
    """loss.aug_vat 0 (the default): no VAT pass, no stat, the term as before; > 0: the
    cluster term adds a finite, non-negative KL on x + r_adv and logs it."""
    _, model, off = _extras()
    _, _, on = _extras(aug_vat=1.5)
    on.model = model
    torch.manual_seed(0)
    t = off.tuples(_batch(16))
    torch.manual_seed(3)
    total_off, stats_off = off._cluster_term(t)
    torch.manual_seed(3)
    total_on, stats_on = on._cluster_term(t)
    assert names.LOSS_CLUSTER_VAT not in stats_off
    vat = stats_on[names.LOSS_CLUSTER_VAT]
    assert torch.isfinite(vat) and vat >= 0
    # the same draws for the affine part: the VAT term is what the two totals differ by
    torch.testing.assert_close(total_on - total_off, vat, rtol=1e-4, atol=1e-6)
    assert names.LOSS_CLUSTER_VAT in names.METRICS


def test_vat_direction_changes_the_assignment_more_than_a_random_one():
    """r_adv (one power iteration) moves p(y|x) more than random directions of the same norm:
    the term finds the direction it is named for. A sharpened encoder, so that p(y|x) is not
    flat; compared over the batch against the mean of 8 random directions."""
    import torch.nn.functional as F

    from amm_core.model.losses import _unit

    _, model, loss = _extras(aug_vat=2.0)
    torch.manual_seed(0)
    x = _batch(16)
    enc = model.encoder

    def logp_of(v):
        with torch.no_grad():
            return F.log_softmax(4 * enc(v, sample=False).y_mu.float(), dim=1)

    # the term's own search, on the sharpened logits: reuse it through a wrapper encoder
    class Sharp(torch.nn.Module):
        def __init__(self, e):
            super().__init__()
            self.e = e

        def forward(self, v, sample=False):
            out = self.e(v, sample=sample)
            return out._replace(y_mu=4 * out.y_mu)

    lp = logp_of(x)

    def kl(r):
        return (lp.exp() * (lp - logp_of(x + r))).sum(1).mean().item()

    class Holder:
        encoder = Sharp(enc)

    loss.model = Holder()
    # the r the term uses: recompute it as the term does, from the same random start
    torch.manual_seed(5)
    vat = loss._vat_term(x, lp).item()
    gen = torch.Generator().manual_seed(7)
    rand = [kl(_unit(torch.randn(x.shape, generator=gen)) * 2.0) for _ in range(8)]
    assert vat > 2 * (sum(rand) / len(rand)), (vat, rand)
