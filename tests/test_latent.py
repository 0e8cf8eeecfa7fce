"""The open choices of the method as keys (docs/method.md): cheap dropout masks, y noise,
decoder output bias, penalty readings, lazy penalty, D steps, extra terms, and the latent-path
diagnostics."""

import json

import pytest
import torch
from torch import nn

from amm_core import names
from amm_core.config import load_config
from amm_core.errors import ConfigError
from amm_core.model.losses import AMMLoss, Tuples
from amm_core.model.models import build_models
from amm_core.model.networks import dropout
from amm_core.run.diagnostics import latent_diagnostics
from amm_core.run.train import run

TINY = ["model.arch=tiny", "model.latent_dim=8"]


@pytest.fixture(autouse=True)
def _seeded():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(n)


def test_byte_dropout_rate_scale_and_gradient():
    x = torch.ones(200_000, requires_grad=True)
    y = dropout(x, 0.2, training=True)
    kept = y.detach() > 0
    # rate quantised to 51/256; kept values scaled so that the expectation is exact
    assert abs(1 - kept.float().mean().item() - 51 / 256) < 0.005
    assert torch.allclose(y.detach()[kept], torch.tensor(256 / 205))
    assert abs(y.detach().mean().item() - 1.0) < 0.01
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(x * mask)/dx = mask
    assert dropout(x, 0.2, training=False) is x
    # seeded: the global RNG decides the mask, so a resumed run draws the same masks
    torch.manual_seed(3)
    a = dropout(torch.ones(1000), 0.5, True)
    torch.manual_seed(3)
    assert torch.equal(a, dropout(torch.ones(1000), 0.5, True))
    # every byte position is used without bias (full-range int64 words: 8 uniform bytes)
    z = dropout(torch.ones(8 * 40_000), 0.5, True).view(-1, 8)
    assert ((z > 0).float().mean(0) - 0.5).abs().max() < 0.02


def test_byte_dropout_keeps_the_memory_layout():
    # channels-last in, channels-last out (the CPU default, train.memory_format), same maths
    x = torch.randn(50, 8, 9, 9).to(memory_format=torch.channels_last).requires_grad_(True)
    y = dropout(x, 0.2, training=True)
    assert y.is_contiguous(memory_format=torch.channels_last)
    kept = y.detach() != 0
    assert abs(1 - kept.float().mean().item() - 51 / 256) < 0.01
    torch.testing.assert_close(y.detach()[kept], x.detach()[kept] * 256 / 205)
    g = torch.randn(50, 8, 9, 9)
    y.backward(g)
    torch.testing.assert_close(x.grad, torch.where(kept, g * 256 / 205, 0.0))
    # a view that is not dense (a channel slice) takes the contiguous path
    s = dropout(torch.ones(4, 6, 5, 5)[:, ::2], 0.5, True)
    assert s.shape == (4, 3, 5, 5) and set(s.unique().tolist()) <= {0.0, 2.0}


def test_new_keys_reach_the_networks():
    m = build_models(
        load_config(
            None,
            TINY
            + [
                "model.enc_dropout=0.3",
                "model.disc_dropout=0.1",
                "model.dec_dropout=0",
                "model.dropout_impl=torch",
                "model.y_noise=gumbel",
                "model.gumbel_tau=0.5",
                "model.dec_out_bias=logodds",
            ],
        )
    )
    assert m.encoder.arch.enc_dropout == 0.3 and m.disc.arch.disc_dropout == 0.1
    assert m.decoder.arch.dec_dropout == 0.0 and m.encoder.arch.dropout_impl == "torch"
    assert m.encoder.y_noise == "gumbel" and m.encoder.gumbel_tau == 0.5
    mean = torch.full((1, 28, 28), 0.25)
    m.decoder.set_output_bias(mean)
    torch.testing.assert_close(m.decoder.out_bias, torch.log(mean / 0.75))
    # with the log-odds bias and (near) zero weights the decoder starts at the data mean
    for p in m.decoder.parameters():
        if p is not m.decoder.out_bias:
            nn.init.zeros_(p)
    m.eval()
    y, z = m.prior.sample(4)
    torch.testing.assert_close(m.decoder(y, z), mean.expand(4, 1, 28, 28))


@pytest.mark.parametrize("noise", ["none", "kendall", "gumbel"])
def test_y_noise(noise):
    m = build_models(load_config(None, TINY + [f"model.y_noise={noise}"])).eval()
    x = torch.rand(64, 1, 28, 28)
    q = m.encoder(x, sample=True)
    same = torch.allclose(q.y, torch.softmax(q.y_mu, 1))
    assert same == (noise == "none")
    d = latent_diagnostics(m, x)
    assert (d[names.DIAG_ENC_AGREE] == 1.0) == (noise == "none")


@pytest.mark.parametrize(
    "item, key",
    [
        ("model.enc_dropout=1.5", "model.enc_dropout"),
        ("model.y_noise=loud", "model.y_noise"),
        ("model.gumbel_tau=0", "model.gumbel_tau"),
        ("loss.penalty=both", "loss.penalty"),
        ("loss.gp_every=0", "loss.gp_every"),
        ("loss.cluster_weight=-1", "loss.cluster_weight"),
        ("loss.aug_rotate=400", "loss.aug_rotate"),
        ("train.d_steps=0", "train.d_steps"),
        ("optim.lr_d=-1", "optim.lr_d"),
    ],
)
def test_new_keys_rejected_by_name(item, key):
    with pytest.raises(ConfigError, match=key):
        load_config(None, [item])


class LinearD(nn.Module):
    """D(x, y, z) = a.x + b.y + c.z: input gradients (a, b, c), known by hand."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.randn(784) * 0.05)
        self.b = nn.Parameter(torch.randn(10) * 2.0)
        self.c = nn.Parameter(torch.randn(8) * 0.1)

    def forward(self, x, y, z):
        return x.flatten(1) @ self.a + y @ self.b + z @ self.c


def _tuples(n=6):
    return Tuples(
        torch.rand(n, 1, 28, 28), torch.softmax(torch.randn(n, 10), 1), torch.randn(n, 8),
        torch.rand(n, 1, 28, 28), torch.eye(10)[torch.arange(n) % 10], torch.randn(n, 8),
        (n,),
    )  # fmt: skip


def test_per_input_penalty_by_hand_and_lazy_weight():
    for every in (1, 4):
        cfg = load_config(None, TINY + ["loss.penalty=per_input", f"loss.gp_every={every}"])
        model = build_models(cfg)
        model.disc = LinearD()
        loss = AMMLoss(model, cfg)
        t, grads = _tuples(), []
        for gain in (1.0, float(every)):
            model.zero_grad(set_to_none=True)
            s = loss.d_gp(t, gain)
            grads.append(model.disc.b.grad.clone())
        d = model.disc
        want = sum((v.detach().norm() - 1) ** 2 for v in (d.a, d.b, d.c))
        torch.testing.assert_close(s[names.LOSS_D_GP], 10 * want)  # logged without the gain
        torch.testing.assert_close(
            s[names.GP_NORM], torch.cat([d.a, d.b, d.c]).detach().norm()
        )  # the reported norm stays the joint one
        torch.testing.assert_close(grads[1], every * grads[0])  # the gain scales the gradient
        assert d.b.grad.abs().sum() > 0 and d.c.grad.abs().sum() > 0


def test_penalty_gains():
    from amm_core.run.step import penalty_gains

    def sched(*extra, steps=8):
        cfg = load_config(None, TINY + list(extra))
        return [penalty_gains(cfg, s) for s in range(steps)]

    assert sched("loss.gp_every=1") == [[1.0]] * 8  # the paper: every D step
    assert sched("loss.gp_every=4") == [[4.0], [0.0], [0.0], [0.0]] * 2
    # with two D steps a step, the count runs over D steps
    assert sched("loss.gp_every=4", "train.d_steps=2", steps=4) == [[4.0, 0.0], [0.0, 0.0]] * 2
    assert sched("loss.penalty=none", "loss.gp_every=1", steps=2) == [[0.0]] * 2
    assert sched("loss.gp_weight=0", "loss.gp_every=1", steps=2) == [[0.0]] * 2


@pytest.mark.parametrize("term", ["info_weight", "cluster_weight"])
def test_extra_terms_train_the_encoder_and_are_reported(term):
    base = TINY + ["model.dropout=0", "model.y_noise=none", "loss.penalty=none"]
    grads = {}
    for w in (0.0, 1.0):
        torch.manual_seed(0)
        cfg = load_config(None, base + [f"loss.{term}={w}"])
        model = build_models(cfg).train()
        loss = AMMLoss(model, cfg)
        x = torch.rand(16, 1, 28, 28)
        s = loss.g_main(loss.tuples(x))
        grads[w] = torch.cat([p.grad.flatten() for p in model.encoder.y_mu.parameters()])
        if term == "info_weight":
            assert (names.LOSS_G_INFO in s) == (w > 0)
            dec_grad = model.decoder.y_in.weight.grad
            assert dec_grad is not None and dec_grad.abs().sum() > 0
        else:
            assert (names.LOSS_CLUSTER_HMARG in s) == (w > 0)
            if w > 0:  # a batch-mean prediction can never be more uncertain than log K
                assert 0 < float(s[names.LOSS_CLUSTER_HMARG]) <= torch.log(torch.tensor(10.0))
    assert not torch.allclose(grads[0.0], grads[1.0])  # the term moves G_y(x)


def test_diagnostics_logged_and_moved_by_their_keys(tmp_path, data_root):
    fast = TINY + [
        "data.train_subset=2000",
        "data.val_size=500",
        "train.batch_size=32",
        "train.steps=40",
        "train.eval_every=20",
        "train.figures=false",
    ]
    runs = {
        "paper": [],
        # means spread at scale 3, no encoder noise, D steps x2 with the lazy penalty
        "spread": [
            "prior.init_means=random",
            "model.y_noise=none",
            "train.d_steps=2",
            "loss.gp_every=2",
            "loss.penalty=per_input",
            "loss.info_weight=1",
        ],
    }
    seen = {}
    for name, extra in runs.items():
        cfg = load_config(None, fast + extra)
        run(cfg, tmp_path / name)
        rows = [
            json.loads(ln) for ln in (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        ]
        assert [r["step"] for r in rows] == [20, 40]
        for r in rows:
            for key in names.DIAG_METRICS:
                assert isinstance(r[key], float) and r[key] == r[key], (name, key)
        seen[name] = rows[-1]
    # learned means from one point start on top of each other; the spread keeps them apart
    assert (
        seen["paper"][names.DIAG_MEANS_MIN_DIST] < 1.0 < seen["spread"][names.DIAG_MEANS_MIN_DIST]
    )
    assert seen["spread"][names.DIAG_ENC_AGREE] == 1.0 > seen["paper"][names.DIAG_ENC_AGREE]
    assert names.LOSS_G_INFO in seen["spread"] and names.LOSS_G_INFO not in seen["paper"]
