"""The architectures of the paper as data (docs/method.md section 3: MNIST = figure 6, SVHN =
figure 5): an `Arch` table per name, read by the generic modules of `amm_core.model.networks`.
`tiny` is a few-channel version for tests, for 1x28x28 and 3x32x32 inputs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

Conv = tuple[int, int, int]  # (kernel, stride, out channels)


@dataclass(frozen=True)
class Arch:
    name: str
    in_shape: tuple[int, int, int]  # (C, H, W) of the images
    enc: tuple[Conv, ...]  # each encoder stream (y and z alike): convs down to 1x1
    enc_dropout: float  # on every encoder conv
    dec_in: int  # channels of the decoder's first 1x1 layer, on y and on z
    dec: tuple[Conv, ...]  # decoder transposed convs (both streams); the last gives C channels
    dec_dropout: float  # on the decoder convs after the first 1x1
    disc_x: tuple[Conv, ...]  # D's x branch
    disc_yz: tuple[int, ...]  # D's y and z branches: 1x1 widths
    disc_head: tuple[int, ...]  # D after the concatenation: 1x1 widths, then one logit
    disc_dropout: float  # on every D layer except the logit
    mean_hidden: tuple[tuple[int, float], ...]  # G_z(y): hidden (width, dropout), BN + Leaky
    dropout_impl: str = "bytes"  # how masks are drawn (`dropout`); the maths is the same


MNIST_ENC: tuple[Conv, ...] = ((2, 1, 16), (3, 2, 32), (3, 2, 64), (3, 1, 64), (4, 1, 128))
SVHN_ENC: tuple[Conv, ...] = (
    (2, 1, 16), (3, 2, 128), (3, 1, 128), (3, 2, 256), (3, 1, 256), (4, 1, 512),
)  # fmt: skip

ARCHS: dict[str, Arch] = {
    # paper figure 6; spatial 28 -> 27 -> 13 -> 6 -> 4 -> 1 and back
    "mnist": Arch(
        name="mnist",
        in_shape=(1, 28, 28),
        enc=MNIST_ENC,
        enc_dropout=0.2,
        dec_in=128,
        dec=((4, 1, 64), (3, 1, 64), (3, 2, 32), (3, 2, 16), (2, 1, 1)),
        dec_dropout=0.2,
        disc_x=MNIST_ENC,
        disc_yz=(64, 64),
        disc_head=(256, 256),  # the figure is cut off here: ALI's D(x, z) join
        disc_dropout=0.2,
        mean_hidden=((64, 0.0), (64, 0.2)),
    ),
    # paper figure 5; spatial 32 -> 31 -> 15 -> 13 -> 6 -> 4 -> 1 and back
    "svhn": Arch(
        name="svhn",
        in_shape=(3, 32, 32),
        enc=SVHN_ENC,
        enc_dropout=0.0,
        dec_in=512,
        dec=((4, 1, 256), (3, 1, 256), (3, 2, 128), (3, 1, 128), (3, 2, 16), (2, 1, 3)),
        dec_dropout=0.0,
        disc_x=SVHN_ENC,
        disc_yz=(512, 512),
        disc_head=(1024, 1024),
        disc_dropout=0.2,
        mean_hidden=(),  # a single linear layer y -> mu
    ),
    # tests: 28 -> 27 -> 13 -> 6 -> 1
    "tiny": Arch(
        name="tiny",
        in_shape=(1, 28, 28),
        enc=((2, 1, 8), (3, 2, 16), (3, 2, 16), (6, 1, 32)),
        enc_dropout=0.0,
        dec_in=32,
        dec=((6, 1, 16), (3, 2, 16), (3, 2, 8), (2, 1, 1)),
        dec_dropout=0.0,
        disc_x=((2, 1, 8), (3, 2, 16), (3, 2, 16), (6, 1, 32)),
        disc_yz=(16, 16),
        disc_head=(64, 64),
        disc_dropout=0.2,
        mean_hidden=((16, 0.0),),
    ),
}
# tiny for 3x32x32 (SVHN-shaped data): 32 -> 31 -> 15 -> 7 -> 1
_TINY32_ENC: tuple[Conv, ...] = ((2, 1, 8), (3, 2, 16), (3, 2, 16), (7, 1, 32))
TINY32 = dataclasses.replace(
    ARCHS["tiny"],
    in_shape=(3, 32, 32),
    enc=_TINY32_ENC,
    dec=((7, 1, 16), (3, 2, 16), (3, 2, 8), (2, 1, 3)),
    disc_x=_TINY32_ENC,
)
# the image shapes each model.arch takes (config.py checks data.dataset against them)
ARCH_SHAPES = {name: [a.in_shape] for name, a in ARCHS.items()}
ARCH_SHAPES["tiny"].append(TINY32.in_shape)


def get_arch(
    name: str, in_shape: tuple[int, int, int] | None = None, dropout: float | None = None
) -> Arch:
    """The table for `name`; `in_shape` (C, H, W) picks tiny's 3x32x32 variant. Which arch
    takes which dataset is checked by the config (model.arch against data.dataset).

    dropout None keeps the table's rates, a rate replaces every rate (config model.dropout).
    """
    arch = ARCHS[name]
    if name == "tiny" and in_shape is not None and tuple(in_shape) == TINY32.in_shape:
        arch = TINY32
    assert in_shape is None or tuple(in_shape) == arch.in_shape, (name, in_shape)
    if dropout is None:
        return arch
    hidden = tuple((w, dropout) for w, _ in arch.mean_hidden)
    return dataclasses.replace(
        arch, enc_dropout=dropout, dec_dropout=dropout, disc_dropout=dropout, mean_hidden=hidden
    )


def conv_sizes(size: int, convs: tuple[Conv, ...], transposed: bool = False) -> list[int]:
    """Spatial sizes along a conv chain (no padding), e.g. MNIST encoder [28, 27, 13, 6, 4, 1]."""
    out = [size]
    for k, s, _ in convs:
        size = (size - 1) * s + k if transposed else (size - k) // s + 1
        out.append(size)
    return out


def check_tables(arch: Arch) -> None:
    hw = arch.in_shape[1]
    for what, convs in (("enc", arch.enc), ("disc_x", arch.disc_x)):
        if conv_sizes(hw, convs)[-1] != 1:
            raise ValueError(f"arch {arch.name!r}: {what} does not end at 1x1 for {hw}x{hw}")
    if conv_sizes(1, arch.dec, transposed=True)[-1] != hw or arch.dec[-1][2] != arch.in_shape[0]:
        raise ValueError(f"arch {arch.name!r}: dec does not end at {arch.in_shape}")
