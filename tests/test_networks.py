"""Networks and models: the paper's layer tables, shapes, inference wiring, init, input checks."""

import pytest
import torch
from helpers import stream_parameters

from amm_core.config import config_from_dict
from amm_core.errors import ConfigError
from amm_core.model.archs import ARCH_SHAPES, ARCHS, TINY32, conv_sizes, get_arch
from amm_core.model.models import build_models
from amm_core.model.networks import Decoder, Discriminator, Encoder, MeanNet

K, L = 10, 16


pytestmark = pytest.mark.usefixtures("one_thread")


def test_spatial_chains_match_the_paper():
    mnist, svhn = ARCHS["mnist"], ARCHS["svhn"]
    assert conv_sizes(28, mnist.enc) == [28, 27, 13, 6, 4, 1]
    assert [c for _, _, c in mnist.enc] == [16, 32, 64, 64, 128]
    assert conv_sizes(1, mnist.dec, transposed=True) == [1, 4, 6, 13, 27, 28]
    assert [c for _, _, c in mnist.dec] == [64, 64, 32, 16, 1]
    assert conv_sizes(32, svhn.enc) == [32, 31, 15, 13, 6, 4, 1]
    assert [c for _, _, c in svhn.enc] == [16, 128, 128, 256, 256, 512]
    assert conv_sizes(1, svhn.dec, transposed=True) == [1, 4, 6, 13, 15, 31, 32]
    assert [c for _, _, c in svhn.dec] == [256, 256, 128, 128, 16, 3]
    assert (mnist.disc_yz, mnist.disc_head) == ((64, 64), (256, 256))
    assert (svhn.disc_yz, svhn.disc_head) == ((512, 512), (1024, 1024))
    assert (mnist.enc_dropout, mnist.dec_dropout, mnist.disc_dropout) == (0.2, 0.2, 0.2)
    assert (svhn.enc_dropout, svhn.dec_dropout, svhn.disc_dropout) == (0.0, 0.0, 0.2)
    assert mnist.mean_hidden == ((64, 0.0), (64, 0.2)) and svhn.mean_hidden == ()
    assert conv_sizes(28, ARCHS["tiny"].enc)[-1] == 1 and conv_sizes(32, TINY32.enc)[-1] == 1


def _run_recording(convs, fn):
    """Call fn() and return the spatial size each conv in `convs` produced."""
    sizes = []
    hooks = [c.register_forward_hook(lambda _m, _i, o: sizes.append(o.shape[-1])) for c in convs]
    try:
        return fn(), sizes
    finally:
        for h in hooks:
            h.remove()


@pytest.mark.parametrize("name,shape", [
    ("mnist", (1, 28, 28)), ("svhn", (3, 32, 32)), ("tiny", (1, 28, 28)), ("tiny", (3, 32, 32)),
])  # fmt: skip
@pytest.mark.parametrize("inference", ["q2", "q1", "independent"])
def test_module_shapes(name, shape, inference):
    arch = get_arch(name, shape)
    n = 3
    x = torch.rand(n, *shape)
    enc = Encoder(arch, K, L, inference)
    out, sizes = _run_recording(enc.z_convs, lambda: enc(x))
    assert sizes == conv_sizes(shape[1], arch.enc)[1:]
    assert out.y_mu.shape == out.y_logvar.shape == out.y.shape == (n, K)
    assert out.z_mu.shape == out.z_logvar.shape == out.z.shape == (n, L)
    torch.testing.assert_close(out.y.sum(1), torch.ones(n))
    dec = Decoder(arch, K, L)
    xr, sizes = _run_recording(dec.z_convs, lambda: dec(out.y, out.z))
    assert sizes == conv_sizes(1, arch.dec, transposed=True)[1:]
    assert xr.shape == (n, *shape) and xr.min() >= 0 and xr.max() <= 1
    d = Discriminator(arch, K, L)(x, out.y, out.z)
    assert d.shape == (n,)
    assert MeanNet(arch, K, L)(torch.eye(K)[:n]).shape == (n, L)


def test_sampling_and_means():
    enc = Encoder(get_arch("tiny"), K, L).eval()
    x = torch.rand(4, 1, 28, 28)
    a, b = enc(x, sample=False), enc(x, sample=False)
    torch.testing.assert_close(a.z, a.z_mu)
    torch.testing.assert_close(a.y, torch.softmax(a.y_mu, 1))
    torch.testing.assert_close(a.z, b.z)
    c = enc(x, sample=True)
    assert not torch.allclose(c.z, a.z) and not torch.allclose(c.y, a.y)
    labels = torch.tensor([3, 0, 9, 3])
    g = enc(x, y_given=labels)
    torch.testing.assert_close(g.y, torch.nn.functional.one_hot(labels, K).float())


def _perturbed(enc, params, x):
    with torch.no_grad():
        for p in params:
            p.add_(0.5 * torch.randn_like(p))
    return enc(x, sample=False)


@pytest.mark.parametrize("inference,y_feeds_z,z_feeds_y", [
    ("q2", False, True), ("q1", True, False), ("independent", False, False),
])  # fmt: skip
def test_inference_order_wiring(inference, y_feeds_z, z_feeds_y):
    x = torch.rand(4, 1, 28, 28)
    enc = Encoder(get_arch("tiny"), K, L, inference).eval()
    base = enc(x, sample=False)
    after_y = _perturbed(enc, [c.weight for c in enc.y_convs], x)
    assert not torch.allclose(after_y.y, base.y)
    assert torch.allclose(after_y.z, base.z) != y_feeds_z
    enc = Encoder(get_arch("tiny"), K, L, inference).eval()
    base = enc(x, sample=False)
    after_z = _perturbed(enc, [c.weight for c in enc.z_convs], x)
    assert not torch.allclose(after_z.z, base.z)
    assert torch.allclose(after_z.y, base.y) != z_feeds_y


@pytest.mark.parametrize("inference", ["q2", "q1", "independent"])
def test_y_given_keeps_gradient_out_of_the_y_stream(inference):
    enc = Encoder(get_arch("tiny"), K, L, inference)
    x = torch.rand(4, 1, 28, 28)
    out = enc(x, y_given=torch.tensor([1, 2, 3, 4]))
    out.z.pow(2).sum().backward()
    assert all(p.grad is None or not p.grad.any() for p in stream_parameters(enc, "y"))
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in stream_parameters(enc, "z"))
    if inference == "q1":  # without y_given the z heads do reach the y stream
        enc.zero_grad()
        enc(x).z.pow(2).sum().backward()
        assert any(
            p.grad is not None and p.grad.abs().sum() > 0 for p in stream_parameters(enc, "y")
        )


def test_init_weights():
    arch = get_arch("svhn")
    d = Discriminator(arch, K, L)
    w = d.x_convs[4].weight  # 256 x 256 x 3 x 3
    assert w.numel() > 500_000
    assert abs(w.std().item() - 0.02) < 0.0005 and abs(w.mean().item()) < 0.0005
    enc = Encoder(arch, K, L)
    for m in enc.modules():
        if isinstance(m, torch.nn.Conv2d | torch.nn.Linear):
            assert not m.bias.any()
        if isinstance(m, torch.nn.BatchNorm2d):
            assert (m.weight == 1).all() and not m.bias.any()
    big = Decoder(arch, K, L).z_convs[1].weight  # 256 x 256 x 3 x 3
    assert abs(big.std().item() - 0.02) < 0.0005


def test_wrong_image_shape_is_named():
    arch = get_arch("mnist")
    with pytest.raises(
        ValueError, match=r"expects images of shape \(N, 1, 28, 28\).*\(2, 3, 32, 32\)"
    ):
        Encoder(arch, K, L)(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"Discriminator.*\(N, 1, 28, 28\).*\(2, 1, 32, 32\)"):
        Discriminator(arch, K, L)(torch.rand(2, 1, 32, 32), torch.rand(2, K), torch.rand(2, L))
    # the choices are checked once, by the config
    with pytest.raises(ConfigError, match="key 'model.arch'.*allowed: mnist, svhn, tiny"):
        config_from_dict({"model": {"arch": "resnet"}})
    with pytest.raises(ConfigError, match="key 'model.inference'.*allowed: q2, q1, independent"):
        config_from_dict({"model": {"inference": "q3"}})


def test_dropout_override():
    assert get_arch("mnist", dropout=None) == ARCHS["mnist"]
    a = get_arch("svhn", dropout=0.3)
    assert (a.enc_dropout, a.dec_dropout, a.disc_dropout) == (0.3, 0.3, 0.3)
    b = get_arch("mnist", dropout=0.0)
    assert b.mean_hidden == ((64, 0.0), (64, 0.0)) and b.enc_dropout == 0.0
    # the rate reaches the modules: with dropout 0 train mode is deterministic
    enc = Encoder(b, K, L)
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(enc(x, sample=False).z, enc(x, sample=False).z)
    enc = Encoder(ARCHS["mnist"], K, L)
    assert not torch.allclose(enc(x, sample=False).z, enc(x, sample=False).z)


def test_decoder_dropout_alone():
    from amm_core.config import load_config
    from amm_core.model.models import build_models

    m = build_models(load_config(None, ["model.dec_dropout=0"])).train()
    assert m.decoder.arch.dec_dropout == 0.0 and m.encoder.arch.enc_dropout == 0.2
    assert m.disc.arch.disc_dropout == 0.2
    y, z = m.prior.sample(4)
    y, z = y[:1].repeat(4, 1), z[:1].repeat(4, 1)  # one (y, z) four times
    x = m.decoder(y, z)  # train mode: BatchNorm sees equal rows, no dropout -> equal images
    torch.testing.assert_close(x, x[:1].expand_as(x))
    m = build_models(load_config(None, [])).train()
    x = m.decoder(y, z)  # the architecture's 0.2: dropout noise alone makes them differ
    assert not torch.allclose(x, x[:1].expand_as(x))


def test_models_arch_dataset_and_param_groups():
    # the config's shape table agrees with the architecture tables
    for name, shapes in ARCH_SHAPES.items():
        assert [get_arch(name, s).in_shape for s in shapes] == shapes
    assert ARCH_SHAPES["mnist"] == ARCH_SHAPES["tiny"][:1] == [(1, 28, 28)]
    assert ARCH_SHAPES["svhn"] == ARCH_SHAPES["tiny"][1:] == [(3, 32, 32)]
    with pytest.raises(ConfigError, match=r"model.arch.*'svhn'.*3x32x32.*'mnist'.*1x28x28"):
        config_from_dict({"model": {"arch": "svhn"}, "data": {"dataset": "mnist"}})
    with pytest.raises(ValueError, match="allowed: svhn, tiny"):
        build_models(config_from_dict({"model": {"arch": "mnist"}, "data": {"dataset": "svhn"}}))
    cfg = config_from_dict(
        {"model": {"arch": "tiny", "latent_dim": 8}, "prior": {"learn_sigma": True}}
    )
    m = build_models(cfg)
    g = {id(p) for p in m.generator_parameters()}
    d = {id(p) for p in m.discriminator_parameters()}
    assert not g & d and g | d == {id(p) for p in m.parameters()}
    assert id(m.prior.log_sigma) in g
    assert {id(p) for p in m.prior.mean_net.parameters()} <= g
    assert m.encoder.arch.in_shape == (1, 28, 28)
    m3 = build_models(cfg.replace(**{"data.dataset": "svhn"}))
    assert m3.decoder(*m3.prior.sample(2)).shape == (2, 3, 32, 32)


@pytest.mark.parametrize("transposed", [False, True])
def test_strided_convolutions_add_the_bias_after(transposed):
    """The networks' strided convolutions add their bias as a separate step on the CPU
    (oneDNN's fused bias is slow there); value and gradients are those of the fused call."""
    from torch.nn import functional as F

    from amm_core.model.networks import Conv2d, ConvTranspose2d

    torch.manual_seed(0)
    m = (ConvTranspose2d if transposed else Conv2d)(8, 4, 3, 2)
    x = torch.randn(5, 8, 9, 9, requires_grad=True)
    fused = F.conv_transpose2d if transposed else F.conv2d
    want = fused(x, m.weight, m.bias, 2)
    got = m(x)
    torch.testing.assert_close(got, want)
    g = torch.randn_like(want)
    grads = torch.autograd.grad(got, [x, m.weight, m.bias], g)
    for a, b in zip(grads, torch.autograd.grad(want, [x, m.weight, m.bias], g), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)  # summation order only
    assert m.state_dict().keys() == {"weight", "bias"}  # checkpoints keep their keys
