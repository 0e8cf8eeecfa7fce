"""Losses: Algorithm 1/2 values, which parameters each phase moves, the joint gradient penalty."""

import math

import pytest
import torch
from helpers import stream_parameters
from torch import nn

from amm_core import names
from amm_core.config import config_from_dict
from amm_core.data.splits import to_float
from amm_core.model.losses import AMMLoss, Tuples
from amm_core.model.models import build_models
from amm_core.run.step import Stats, TrainingStep, make_optimizers, training_step

K, L = 10, 8


pytestmark = pytest.mark.usefixtures("one_thread")


def _setup(penalty="joint", inference="q2", dropout=-1.0, labelled=0, **prior):
    cfg = config_from_dict(
        {
            "model": {"arch": "tiny", "latent_dim": L, "inference": inference, "dropout": dropout},
            "loss": {"penalty": penalty, "gp_weight": 10.0, "gp_every": 1},
            "data": {"labelled": labelled},
            "prior": prior,
        }
    )
    model = build_models(cfg)
    return model, AMMLoss(model, cfg)


def _batch(n=8):
    return torch.rand(n, 1, 28, 28)


class BiasD(nn.Module):
    """d = b for every tuple: the losses are hand-checkable."""

    def __init__(self, b):
        super().__init__()
        self.b = nn.Parameter(torch.tensor(float(b)))

    def forward(self, x, y, z):
        return self.b.expand(x.shape[0]) + 0 * (x.sum((1, 2, 3)) + y.sum(1) + z.sum(1))


class ZOnlyD(nn.Module):
    """A discriminator that reads only z (d = w . z): x-only penalties never see it."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.full((L,), 0.1))

    def forward(self, x, y, z):
        return z @ self.w


class LinearD(nn.Module):
    """d = a.x + b.y + c.z: the input gradient is (a, b, c) for every sample."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(0.01 * torch.randn(784))
        self.b = nn.Parameter(0.3 * torch.randn(K))
        self.c = nn.Parameter(0.3 * torch.randn(L))

    def forward(self, x, y, z):
        return x.flatten(1) @ self.a + y @ self.b + z @ self.c


@pytest.mark.parametrize("labelled", [False, True])
def test_loss_values_by_hand(labelled):
    model, loss = _setup(labelled=10 if labelled else 0)
    b = 0.7
    model.disc = BiasD(b)
    sp = nn.functional.softplus
    x_l, y_l = (_batch(6), torch.arange(6)) if labelled else (None, None)
    s = loss.d_main(loss.tuples(_batch(), x_l, y_l))
    want = sp(torch.tensor(-b)) + sp(torch.tensor(b))
    torch.testing.assert_close(s[names.LOSS_D], want)
    # dL_D/db = -sigmoid(-b) + sigmoid(b) (each game's terms weighted 1/2 in SAMM: same total)
    torch.testing.assert_close(model.disc.b.grad, torch.sigmoid(torch.tensor(b)) * 2 - 1)
    torch.testing.assert_close(s[names.D_REAL], torch.sigmoid(torch.tensor(b)))
    g = loss.g_main(loss.tuples(_batch(), x_l, y_l))
    torch.testing.assert_close(g[names.LOSS_G_DEC], sp(torch.tensor(-b)))
    torch.testing.assert_close(g[names.LOSS_G_ENC], sp(torch.tensor(b)))
    torch.testing.assert_close(g[names.LOSS_G], want)
    for v in {**s, **g}.values():
        assert torch.is_tensor(v) and v.dim() == 0 and not v.requires_grad


def _params(model, which):
    d = {id(p) for p in model.discriminator_parameters()}
    out = {}
    for n, p in model.named_parameters():
        if (id(p) in d) == (which == "D"):
            out[n] = p.detach().clone()
    return out


def _changed(before, model):
    now = dict(model.named_parameters())
    return {n for n, v in before.items() if not torch.equal(v, now[n])}


@pytest.mark.parametrize("labelled", [False, True])
def test_each_step_moves_only_its_networks(labelled):
    model, loss = _setup(labelled=10 if labelled else 0, learn_sigma=True)
    model.train()
    opt_g = torch.optim.Adam(model.generator_parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(model.discriminator_parameters(), lr=1e-3, betas=(0.5, 0.999))
    x, x_l, y_l = (
        _batch(),
        (_batch(6) if labelled else None),
        (torch.arange(6) if labelled else None),
    )
    g0, d0 = _params(model, "G"), _params(model, "D")
    opt_d.zero_grad(set_to_none=True)
    t = loss.tuples(x, x_l, y_l)
    s = loss.d_main(t)
    s.update(loss.d_gp(t))
    opt_d.step()
    assert _changed(g0, model) == set()
    assert _changed(d0, model) == set(d0)  # every D parameter moved
    d1 = _params(model, "D")
    d_grads = [p.grad.clone() for p in model.discriminator_parameters()]
    opt_g.zero_grad(set_to_none=True)
    s.update(loss.g_main(t))
    opt_g.step()
    assert _changed(d1, model) == set()
    assert _changed(g0, model) == set(g0)  # encoder, decoder, G_z(y), log sigma all moved
    # G_main adds no D gradients and leaves D trainable
    for p, g in zip(model.discriminator_parameters(), d_grads, strict=True):
        assert torch.equal(p.grad, g) and p.requires_grad
    assert set(s) == {
        names.LOSS_D, names.D_REAL, names.D_FAKE, names.LOSS_D_GP, names.GP_NORM,
        names.LOSS_G, names.LOSS_G_DEC, names.LOSS_G_ENC,
    }  # fmt: skip
    assert all(math.isfinite(float(v)) for v in s.values())


@pytest.mark.parametrize("inference", ["q2", "q1", "independent"])
def test_gy_learns_from_the_unlabelled_game_only(inference):
    """With dropout 0, the unlabelled game's G_y(x) gradient is identical with or without the
    labelled game (only its 1/(2M) weight halves it): the labelled game adds nothing to G_y."""
    model, loss = _setup(inference=inference, dropout=0.0, labelled=10)
    x, x_l, y_l = _batch(), _batch(6), torch.arange(6)
    grads = {}
    for samm in (False, True):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(5)
        loss.g_main(loss.tuples(x, *((x_l, y_l) if samm else (None, None))))
        grads[samm] = [p.grad.clone() for p in stream_parameters(model.encoder, "y")]
    for a, b in zip(grads[False], grads[True], strict=True):
        torch.testing.assert_close(b, 0.5 * a, rtol=1e-4, atol=1e-7)
    assert any(a.abs().sum() > 0 for a in grads[False])


@pytest.mark.parametrize("inference", ["q2", "q1", "independent"])
def test_labelled_game_alone_gives_gy_no_gradient(inference):
    model, _ = _setup(inference=inference, labelled=10)
    enc = model.encoder
    x_l, y_l = _batch(6), torch.arange(6)
    q = enc(x_l, y_given=y_l)
    nn.functional.softplus(model.disc(x_l, q.y, q.z)).mean().backward()
    assert all(p.grad is None or not p.grad.any() for p in stream_parameters(enc, "y"))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.z_convs.parameters())


def _tuples(n=6):
    return Tuples(
        torch.rand(n, 1, 28, 28), torch.softmax(torch.randn(n, K), 1), torch.randn(n, L),
        torch.rand(n, 1, 28, 28), torch.eye(K)[torch.arange(n) % K], torch.randn(n, L),
        (n,),
    )  # fmt: skip


def test_joint_penalty_reaches_y_and_z_x_only_does_not():
    model, loss = _setup(penalty="joint")
    model.disc = ZOnlyD()
    s = loss.d_gp(_tuples())
    w = model.disc.w.detach()
    torch.testing.assert_close(s[names.GP_NORM], w.norm())
    torch.testing.assert_close(s[names.LOSS_D_GP], 10 * (w.norm() - 1) ** 2)
    assert model.disc.w.grad.abs().sum() > 0  # D is pushed towards unit gradient norm

    model, loss = _setup(penalty="x_only")
    model.disc = ZOnlyD()
    s = loss.d_gp(_tuples())
    assert float(s[names.GP_NORM]) == 0.0  # the x-only penalty cannot see a z-reading D
    assert float(s[names.LOSS_D_GP]) == 10.0  # a constant: no gradient for D
    assert model.disc.w.grad is None


def test_joint_penalty_value_and_shared_alpha():
    model, loss = _setup(penalty="joint")
    model.disc = LinearD()
    seen = {}
    fwd = model.disc.forward

    def record(x, y, z):
        seen.update(x=x.detach(), y=y.detach(), z=z.detach())
        return fwd(x, y, z)

    model.disc.forward = record
    t = _tuples()
    s = loss.d_gp(t)
    d = model.disc
    norm = torch.cat([d.a, d.b, d.c]).detach().norm()
    torch.testing.assert_close(s[names.LOSS_D_GP], 10 * (norm - 1) ** 2)
    assert d.a.grad is not None and d.b.grad.abs().sum() > 0 and d.c.grad.abs().sum() > 0
    # x^, y^, z^ lie on the lines between the tuples with one alpha per sample
    ax = ((seen["x"] - t.xp).flatten(1) / (t.xq - t.xp).flatten(1)).median(1).values
    az = ((seen["z"] - t.zp) / (t.zq - t.zp)).median(1).values
    ay = ((seen["y"] - t.yp) / (t.yq - t.yp)).median(1).values
    torch.testing.assert_close(ax, az, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(ay, az, rtol=1e-3, atol=1e-3)
    assert ((az > 0) & (az < 1)).all() and az.std() > 0.05


def test_roth_penalty_by_hand():
    model, loss = _setup(penalty="roth")
    model.disc = ZOnlyD()
    t = _tuples()
    s = loss.d_gp(t)
    w = model.disc.w.detach()
    sq, sp = torch.sigmoid(t.zq @ w), torch.sigmoid(t.zp @ w)
    g2 = w.pow(2).sum()
    want = 10 * 0.5 * (((1 - sq) ** 2 * g2).mean() + (sp**2 * g2).mean())
    torch.testing.assert_close(s[names.LOSS_D_GP], want)
    assert model.disc.w.grad.abs().sum() > 0


def test_penalty_skipped_at_gain_zero_and_cut_from_generator_tuples():
    model, loss = _setup(penalty="joint")
    opt_g, opt_d = make_optimizers(model, config_from_dict({}))
    s = training_step(loss, opt_d, opt_g, _batch(), gains=[0.0])  # off, or not its turn
    assert names.LOSS_D_GP not in s and names.GP_NORM not in s and names.LOSS_D in s
    model.zero_grad(set_to_none=True)  # tuples with their generator graph: cut by D_gp
    s = loss.d_gp(loss.tuples(to_float((_batch() * 255).to(torch.uint8))))
    assert float(s[names.LOSS_D_GP]) > 0
    assert all(p.grad is None for p in model.generator_parameters())
    # every D weight gets a penalty gradient (biases only through the activation pattern)
    assert all(p.grad.abs().sum() > 0 for n, p in model.disc.named_parameters() if "weight" in n)


@pytest.mark.parametrize("d_steps", [1, 2])
def test_generator_phase_reuses_the_last_d_steps_forward(d_steps):
    model, loss = _setup()
    bn = next(m for m in model.encoder.modules() if isinstance(m, nn.BatchNorm2d))
    forwards = lambda: int(bn.num_batches_tracked)  # noqa: E731 - one encoder forward each
    x = _batch()
    n0 = forwards()
    t = loss.tuples(x)
    loss.d_main(t)
    loss.d_gp(t)
    loss.g_main(t)
    assert forwards() - n0 == 1  # the D phase's encoder/decoder forward served the G phase
    opt_g = torch.optim.Adam(model.generator_parameters())
    opt_d = torch.optim.Adam(model.discriminator_parameters())
    training_step(loss, opt_d, opt_g, x, gains=[1.0] * d_steps)
    assert forwards() - n0 == 1 + d_steps  # one forward per D step, none for the G step


@pytest.mark.parametrize("penalty", ["joint", "per_input"])
def test_a_bf16_autocast_step_trains(penalty):
    """train.amp=bf16: the synthesis side comes out of the networks in bf16 and the penalty's
    interpolates mix it with fp32 data (this once raised a dtype error in torch.lerp)."""
    from amm_core.run.accel import autocast
    from amm_core.run.step import make_optimizers

    model, loss = _setup(penalty=penalty)
    cfg = config_from_dict({"model": {"arch": "tiny"}, "train": {"amp": "bf16"}})
    opt_g, opt_d = make_optimizers(model, cfg)
    before = [p.detach().clone() for p in model.parameters()]
    with autocast(cfg, torch.device("cpu")):
        stats = training_step(loss, opt_d, opt_g, _batch())
    assert stats[names.LOSS_D_GP].dtype == torch.float32  # the penalty is computed in fp32
    assert all(torch.isfinite(v) for v in stats.values())
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


def test_channels_last_changes_no_maths():
    """train.memory_format: the CPU default lays the convolutions out channels-last; with the
    same weights and random draws (dropout off: masks follow the memory order) one training
    step moves every parameter as the contiguous layout does, and Adam's fused CPU kernel takes
    the same step as the default one."""
    from amm_core.run.accel import memory_format
    from amm_core.run.step import make_optimizers

    cpu = torch.device("cpu")
    cfg = config_from_dict({"model": {"arch": "tiny"}})
    assert memory_format(cfg, cpu) == torch.channels_last
    assert memory_format(cfg, torch.device("cuda")) == torch.contiguous_format
    assert memory_format(cfg.replace(**{"train.memory_format": "contiguous"}), cpu) == (
        torch.contiguous_format
    )
    params = []
    for fmt, fused in ((torch.contiguous_format, False), (torch.channels_last, True)):
        torch.manual_seed(0)
        model, loss = _setup(dropout=0.0)
        model.to(memory_format=fmt)
        opt_g, opt_d = make_optimizers(model, cfg, fused=fused)
        torch.manual_seed(1)
        training_step(loss, opt_d, opt_g, _batch().contiguous(memory_format=fmt))
        params.append([p.detach().contiguous() for p in model.parameters()])
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(*params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("gp_every", [1, 4])
def test_logged_gp_norm_is_the_norm_of_the_penalty_steps(gp_every):
    """loss/gp_grad_norm, as `amm train` logs it (TrainingStep, Stats), is the mean over the
    penalty steps of the joint gradient norm of D at that step's interpolates, measured here
    directly inside each penalty pass (with gp_every=4 it once read a quarter of it)."""
    cfg = config_from_dict(
        {"model": {"arch": "tiny", "latent_dim": L}, "loss": {"gp_every": gp_every}}
    )
    torch.manual_seed(0)
    step = TrainingStep(cfg, torch.device("cpu"))
    seen = []

    def measure(disc, inputs, out):  # the penalty pass: D on leaf interpolates needing grads
        if all(v.is_leaf and v.requires_grad for v in inputs):
            g = torch.autograd.grad(out.sum(), inputs, retain_graph=True)
            seen.append(float(torch.cat([v.flatten(1) for v in g], 1).norm(dim=1).mean()))

    step.model.disc.register_forward_hook(measure)
    stats = Stats()
    for i in range(8):
        stats.add(step(i, _batch()))
    assert len(seen) == 8 // gp_every
    logged = stats.flush(8)[names.GP_NORM]
    assert logged == pytest.approx(sum(seen) / len(seen), rel=1e-4)


def test_centroid_term_is_zero_on_the_means_and_pulls_codes_onto_them():
    """loss.centroid_weight: the soft centroid of z~ per component against the eval-mode mu_k;
    zero when every code sits on its component's mean, and its gradient moves codes toward it."""
    model, loss = _setup(dropout=0.0)
    mu = model.prior.means().detach()
    logits = torch.full((K, K), -30.0).fill_diagonal_(30.0)  # image k certainly in component k
    on = Tuples(*[torch.zeros(1)] * 6, (K,), y_mu=logits, z_mu=mu.clone())
    assert float(loss._centroid_term(on)) == pytest.approx(0.0, abs=1e-8)
    z = (mu + 2.0).requires_grad_(True)  # every code 2 units off in every dimension
    off = Tuples(*[torch.zeros(1)] * 6, (K,), y_mu=logits, z_mu=z)
    value = loss._centroid_term(off)
    # 2^2 per dimension, mean over L, component shares 1/K each
    assert float(value.detach()) == pytest.approx(4.0, rel=1e-4)
    value.backward()
    assert (z.grad > 0).all()  # descending it moves each code back toward its mean


def test_bayes_term_moves_only_the_codes_eq18_misassigns():
    """loss.bayes_weight: cross-entropy of eq. 18's posterior on z~ against G_y's assignment;
    about zero when every code sits on its component's mean, large for a code nearest another
    component's mean, and its gradient moves that code from the wrong mean toward the right one
    while a well-placed code gets (almost) none."""
    model, loss = _setup(dropout=0.0, means="random", random_scale=3.0)  # means ~12 apart
    mu = model.prior.means().detach()
    logits = torch.full((K, K), -30.0).fill_diagonal_(30.0)  # image k certainly in component k
    on = Tuples(*[torch.zeros(1)] * 6, (K,), y_mu=logits, z_mu=mu.clone())
    assert float(loss._bayes_term(on)) == pytest.approx(0.0, abs=1e-3)
    z = mu.clone()
    z[0] = mu[1]  # image 0 (component 0 by G_y) coded on component 1's mean
    z.requires_grad_(True)
    value = loss._bayes_term(Tuples(*[torch.zeros(1)] * 6, (K,), y_mu=logits, z_mu=z))
    assert float(value.detach()) > 0.5 / K
    value.backward()
    step = -z.grad[0]  # the descent direction of the misplaced code
    assert float(step @ (mu[0] - mu[1])) > 0  # toward its own mean, away from the wrong one
    assert float(z.grad[1:].abs().max()) < 1e-3 * float(z.grad[0].abs().max())


def test_label_term_trains_gy_on_the_labelled_batch():
    """loss.label_weight (SAMM): CE of G_y(x_l) against y_l is logged and reaches G_y's head, which
    Algorithm 2's labelled game alone never does (test_labelled_game_alone_gives_gy_no_gradient):
    the same step with the term off gives G_y another gradient, by exactly the CE's."""
    grads, y_l = [], torch.arange(8) % K
    for weight in (0.0, 1.0):
        cfg = config_from_dict(
            {
                "model": {"arch": "tiny", "latent_dim": L, "dropout": 0.0},
                "loss": {"label_weight": weight, "gp_every": 1},
                "data": {"labelled": 100},
            }
        )
        torch.manual_seed(0)
        model = build_models(cfg)
        loss = AMMLoss(model, cfg)
        t = loss.tuples(_batch(), _batch(), y_l)
        ce = torch.nn.functional.cross_entropy(t.yl_mu, y_l)
        (ce_grad,) = torch.autograd.grad(ce, model.encoder.y_mu.weight, retain_graph=True)
        out = loss.g_main(t)
        grads.append(model.encoder.y_mu.weight.grad.clone())
        if weight:
            assert float(out[names.LOSS_G_LABEL]) == pytest.approx(float(ce.detach()), rel=1e-5)
        else:
            assert names.LOSS_G_LABEL not in out
    torch.testing.assert_close(grads[1] - grads[0], ce_grad, rtol=1e-4, atol=1e-6)
    assert ce_grad.abs().sum() > 0
