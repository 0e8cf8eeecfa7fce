"""Encoder G_y(x)/G_z(x, .), decoder G_x(y, z), discriminator D(x, y, z) and mean net G_z(y).

Generic modules built from an `Arch` table (`amm_core.model.archs`). Notation: an "(a)" layer is
BatchNorm then LeakyReLU(0.2) on the sum shown; dropout applies to a conv's output. 1x1 layers on
1x1 maps are `nn.Linear` (the same function as a 1x1 conv, without the reshapes).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from amm_core.model.archs import Arch, check_tables

LEAK = 0.2


def init_weights(module: nn.Module) -> None:
    """Paper: kernel weights N(0, 0.02), biases 0. BatchNorm keeps scale 1, shift 0 (the paper
    names only kernel weights; PyTorch's BN default)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def one_hot(y: torch.Tensor, num_components: int) -> torch.Tensor:
    """Labels (N,) -> float one-hot (N, K); a float (N, K) tensor passes through.

    Built with scatter (no host sync); the data loader is where labels are checked."""
    if y.dim() == 2:
        return y.float()
    out = torch.zeros(y.shape[0], num_components, device=y.device)
    return out.scatter_(1, y.long().unsqueeze(1), 1.0)


def _check_input(who: str, arch: Arch, x: torch.Tensor) -> None:
    if x.dim() != 4 or tuple(x.shape[1:]) != arch.in_shape:
        raise ValueError(
            f"{who} for arch {arch.name!r} expects images of shape (N, "
            f"{', '.join(map(str, arch.in_shape))}), got {tuple(x.shape)}"
        )


def _act(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, LEAK)


class _ByteDropout(torch.autograd.Function):
    """Dropout whose keep-mask comes from random bytes: keep where byte >= round(256 p).

    torch's CPU dropout draws one float Bernoulli sample per element (`aten::bernoulli_`, about
    30 % of a CPU training step of the MNIST architecture, docs/performance.md); random int64
    words viewed as bytes are several times cheaper. The rate is quantised to a multiple of
    1/256 (0.2 -> 51/256 = 0.1992) and the kept values are scaled by 1 / (1 - that rate), so
    the expectation is exact. The global torch RNG is used, so runs stay seeded and resumable.
    Three passes forward (words, compare into a float mask, scaled multiply), one backward.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:  # noqa: D102
        drop = round(256 * p)
        # the mask in x's own memory order (channels-last too): every pass is a plain sweep
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
            shape, back = (x.shape[0], x.shape[2], x.shape[3], x.shape[1]), (0, 3, 1, 2)
        else:
            x, shape, back = x.contiguous(), x.shape, None
        n = x.numel()
        # full-range int64 words: all 8 bytes of each word are uniform
        words = torch.empty((n + 7) // 8, dtype=torch.int64, device=x.device)
        rand = words.random_(-(2**63), None).view(torch.uint8)[:n].view(shape)
        mask = torch.ge(rand, drop, out=torch.empty(shape, dtype=x.dtype, device=x.device))
        mask = mask if back is None else mask.permute(back)
        ctx.scale = 256.0 / (256 - drop)
        ctx.save_for_backward(mask)
        return torch.addcmul(x.new_zeros(()), x, mask, value=ctx.scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        (mask,) = ctx.saved_tensors
        return torch.addcmul(grad.new_zeros(()), grad, mask, value=ctx.scale), None


def dropout(x: torch.Tensor, p: float, training: bool, impl: str = "bytes") -> torch.Tensor:
    """Dropout with rate p in train mode; `impl` "torch" is F.dropout, "bytes" the cheaper mask
    (config model.dropout_impl)."""
    if not training or p <= 0:
        return x
    if impl == "torch":
        return F.dropout(x, p, True)
    return _ByteDropout.apply(x, p)


class Dropout(nn.Module):
    """nn.Dropout with the choice of mask (for nn.Sequential users: MeanNet)."""

    def __init__(self, p: float, impl: str = "bytes"):
        super().__init__()
        self.p, self.impl = p, impl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training, self.impl)


def _bias_after(m: nn.Conv2d | nn.ConvTranspose2d, x: torch.Tensor) -> bool:
    """On the CPU, oneDNN's strided convolutions with a fused bias are slow (a stride-2
    transposed one of the MNIST decoder: 9.1 ms forward, 2.5 ms with the bias added after;
    docs/performance.md): add the bias as a separate step there. The same sum either way."""
    return x.device.type == "cpu" and m.bias is not None and max(m.stride) > 1


class Conv2d(nn.Conv2d):
    """nn.Conv2d, with the bias added after the convolution where `_bias_after` says."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if not _bias_after(self, x):
            return super().forward(x)
        # in place: the convolution's backward does not need its output
        return self._conv_forward(x, self.weight, None).add_(self.bias.view(1, -1, 1, 1))


class ConvTranspose2d(nn.ConvTranspose2d):
    """nn.ConvTranspose2d, with the bias added after the convolution where `_bias_after` says."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if not _bias_after(self, x):
            return super().forward(x)
        out = F.conv_transpose2d(
            x, self.weight, None, self.stride, self.padding, self.output_padding, self.groups,
            self.dilation,
        )  # fmt: skip
        return out.add_(self.bias.view(1, -1, 1, 1))


class EncOut(NamedTuple):
    y_mu: torch.Tensor  # (N, K) logit means
    y_logvar: torch.Tensor  # (N, K)
    y: torch.Tensor  # (N, K) softmax of the sampled (or mean) logits, or y_given
    z_mu: torch.Tensor  # (N, L)
    z_logvar: torch.Tensor  # (N, L)
    z: torch.Tensor  # (N, L) sampled (or the mean)


class Encoder(nn.Module):
    """Two conv streams, y (G_y(x)) and z (G_z(x, .)), wired by the inference order:
    q2: y_ia = (a)(z_i + y_i), z_ia = (a)(z_i)           (eq. 7, the paper's tables)
    q1: z_ia = (a)(z_i + y_i), y_ia = (a)(y_i); z heads see [z_5a, y]   (eq. 6, Algorithm 1)
    independent: y_ia = (a)(y_i), z_ia = (a)(z_i)        (eq. 15/16)
    """

    def __init__(
        self,
        arch: Arch,
        num_components: int,
        latent_dim: int,
        inference: str = "q2",
        y_noise: str = "kendall",
        gumbel_tau: float = 1.0,
        z_noise: str = "learned",
    ):
        super().__init__()
        self.y_noise, self.gumbel_tau, self.z_noise = y_noise, gumbel_tau, z_noise
        check_tables(arch)
        self.arch, self.inference = arch, inference
        self.num_components, self.latent_dim = num_components, latent_dim
        c = arch.in_shape[0]
        self.y_convs, self.z_convs = nn.ModuleList(), nn.ModuleList()
        self.y_bns, self.z_bns = nn.ModuleList(), nn.ModuleList()
        for k, s, ch in arch.enc:
            self.y_convs.append(Conv2d(c, ch, k, s))
            self.z_convs.append(Conv2d(c, ch, k, s))
            self.y_bns.append(nn.BatchNorm2d(ch))
            self.z_bns.append(nn.BatchNorm2d(ch))
            c = ch
        self.y_mu = nn.Linear(c, num_components)
        self.y_logvar = nn.Linear(c, num_components)
        zc = c + num_components if inference == "q1" else c
        self.z_mu = nn.Linear(zc, latent_dim)
        self.z_logvar = nn.Linear(zc, latent_dim)
        init_weights(self)

    def forward(
        self, x: torch.Tensor, y_given: torch.Tensor | None = None, sample: bool = True
    ) -> EncOut:
        """x (N, C, H, W) in [0, 1]. `y_given` (labels or one-hot) replaces the sampled y; it is
        then an input, so no gradient from z reaches the y stream (with q1 the y features that
        feed the z stream are detached): G_y(x) learns from the unlabelled game only."""
        _check_input("Encoder", self.arch, x)
        p, impl = self.arch.enc_dropout, self.arch.dropout_impl
        hy = hz = x
        for yc, zc, yb, zb in zip(self.y_convs, self.z_convs, self.y_bns, self.z_bns, strict=True):
            yi = dropout(yc(hy), p, self.training, impl)
            zi = dropout(zc(hz), p, self.training, impl)
            if self.inference == "q2":
                hy, hz = _act(yb(zi + yi)), _act(zb(zi))
            elif self.inference == "q1":
                y_in = yi.detach() if y_given is not None else yi
                hy, hz = _act(yb(yi)), _act(zb(zi + y_in))
            else:
                hy, hz = _act(yb(yi)), _act(zb(zi))
        hy, hz = hy.flatten(1), hz.flatten(1)
        y_mu, y_logvar = self.y_mu(hy), self.y_logvar(hy)
        if y_given is not None:
            y = one_hot(y_given, self.num_components).to(y_mu.dtype)
        elif sample and self.y_noise == "kendall":  # noisy logits, then softmax (eq. 8-9)
            y = torch.softmax(y_mu + torch.exp(0.5 * y_logvar) * torch.randn_like(y_mu), dim=1)
        elif sample and self.y_noise == "gumbel":  # Gumbel-softmax (docs/method.md, y noise)
            u = torch.rand_like(y_mu).clamp_(1e-6, 1 - 1e-6)
            y = torch.softmax((y_mu - torch.log(-torch.log(u))) / self.gumbel_tau, dim=1)
        else:
            y = torch.softmax(y_mu, dim=1)
        if self.inference == "q1":
            hz = torch.cat([hz, y], dim=1)
        z_mu, z_logvar = self.z_mu(hz), self.z_logvar(hz)
        noisy = sample and self.z_noise == "learned"  # z_noise=none: a deterministic z~ (BiGAN)
        z = z_mu + torch.exp(0.5 * z_logvar) * torch.randn_like(z_mu) if noisy else z_mu
        return EncOut(y_mu, y_logvar, y, z_mu, z_logvar, z)


class Decoder(nn.Module):
    """G_x(y, z): the y stream is a chain of transposed convs with no activation; the z stream
    adds it at every layer: z_ia = (a)(z_i + y_i); x = sigmoid(z_0 + y_0)."""

    def __init__(self, arch: Arch, num_components: int, latent_dim: int, out_bias: bool = False):
        super().__init__()
        check_tables(arch)
        self.arch = arch
        # model.dec_out_bias=logodds: a learnable per-pixel bias before the sigmoid, set from
        # the data's mean image by `set_output_bias` (ALI's decoder does this); else none.
        self.out_bias = nn.Parameter(torch.zeros(arch.in_shape)) if out_bias else None
        self.y_in = nn.Linear(num_components, arch.dec_in)
        self.z_in = nn.Linear(latent_dim, arch.dec_in)
        self.bn_in = nn.BatchNorm2d(arch.dec_in)
        self.y_convs, self.z_convs, self.bns = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        c = arch.dec_in
        for i, (k, s, ch) in enumerate(arch.dec):
            self.y_convs.append(ConvTranspose2d(c, ch, k, s))
            self.z_convs.append(ConvTranspose2d(c, ch, k, s))
            if i < len(arch.dec) - 1:
                self.bns.append(nn.BatchNorm2d(ch))
            c = ch
        init_weights(self)

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """y (N, K), z (N, L) -> x (N, C, H, W) in [0, 1]."""
        p, impl = self.arch.dec_dropout, self.arch.dropout_impl
        hy = self.y_in(y)[:, :, None, None]
        hz = _act(self.bn_in(self.z_in(z)[:, :, None, None] + hy))
        last = len(self.z_convs) - 1
        for i, (yc, zc) in enumerate(zip(self.y_convs, self.z_convs, strict=True)):
            hy = dropout(yc(hy), p, self.training, impl)
            zi = dropout(zc(hz), p, self.training, impl)
            if i == last:
                logits = zi + hy
                return torch.sigmoid(logits if self.out_bias is None else logits + self.out_bias)
            hz = _act(self.bns[i](zi + hy))
        raise AssertionError("decoder has no layers")

    @torch.no_grad()
    def set_output_bias(self, mean_image: torch.Tensor) -> None:
        """out_bias <- log-odds of the data's mean pixel values (clipped to [1e-3, 1 - 1e-3])."""
        if self.out_bias is None:
            raise ValueError("decoder built without an output bias (model.dec_out_bias=zero)")
        m = mean_image.to(self.out_bias).clamp(1e-3, 1 - 1e-3)
        self.out_bias.copy_(torch.log(m) - torch.log1p(-m))


class Discriminator(nn.Module):
    """D(x, y, z) -> logit (N,). No BatchNorm (the gradient penalty is per sample); every layer
    but the logit is LeakyReLU(0.2) + dropout. Branches joined by concatenation (ALI)."""

    def __init__(self, arch: Arch, num_components: int, latent_dim: int):
        super().__init__()
        check_tables(arch)
        self.arch = arch
        c = arch.in_shape[0]
        self.x_convs = nn.ModuleList()
        for k, s, ch in arch.disc_x:
            self.x_convs.append(Conv2d(c, ch, k, s))
            c = ch
        self.y_layers = self._mlp(num_components, arch.disc_yz)
        self.z_layers = self._mlp(latent_dim, arch.disc_yz)
        self.joint = self._mlp(c + 2 * arch.disc_yz[-1], arch.disc_head)
        self.logit = nn.Linear(arch.disc_head[-1], 1)
        init_weights(self)

    @staticmethod
    def _mlp(c: int, widths: tuple[int, ...]) -> nn.ModuleList:
        layers = nn.ModuleList()
        for w in widths:
            layers.append(nn.Linear(c, w))
            c = w
        return layers

    def _run(self, h: torch.Tensor, layers: nn.ModuleList) -> torch.Tensor:
        for layer in layers:
            h = dropout(
                _act(layer(h)), self.arch.disc_dropout, self.training, self.arch.dropout_impl
            )
        return h

    def forward(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        _check_input("Discriminator", self.arch, x)
        hx = self._run(x, self.x_convs).flatten(1)
        h = torch.cat([hx, self._run(y, self.y_layers), self._run(z, self.z_layers)], dim=1)
        return self.logit(self._run(h, self.joint)).squeeze(1)


class MeanNet(nn.Module):
    """G_z(y) of eq. 12: y (N, K) -> mu (N, L). Hidden layers Linear -> dropout -> BN -> Leaky
    (MNIST: K -> 64 -> 64 (dropout 0.2) -> L); SVHN has none (a single linear layer)."""

    def __init__(self, arch: Arch, num_components: int, latent_dim: int):
        super().__init__()
        layers: list[nn.Module] = []
        c = num_components
        for width, p in arch.mean_hidden:
            layers.append(nn.Linear(c, width))
            if p > 0:
                layers.append(Dropout(p, arch.dropout_impl))
            layers += [nn.BatchNorm1d(width), nn.LeakyReLU(LEAK)]
            c = width
        layers.append(nn.Linear(c, latent_dim))
        self.net = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)
