"""One training step: the two Adam optimisers, the lazy penalty's schedule (`penalty_gains`),
the order of the loss phases (`training_step`), the step as built for a device
(`TrainingStep`: `amm train` and benchmarks/train_throughput.py), and the loss sums kept on the
device between log lines (`Stats`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from amm_core.config import Config
from amm_core.data.splits import to_float
from amm_core.errors import TrainingError
from amm_core.model.losses import AMMLoss
from amm_core.model.models import AMM, build_models
from amm_core.run import accel


def make_optimizers(
    model: AMM, cfg: Config, capturable: bool = False, fused: bool = False
) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """Adam for the generator side and for D (optim.lr_g / optim.lr_d, None = optim.lr).
    `capturable`: Adam's step counter on the GPU, so that a CUDA graph can hold its step.
    `fused`: one kernel per parameter (the CPU's choice: the step's Adam work drops from about
    2 % to under 1 %; the same update)."""
    o = cfg.optim
    common = {"betas": (o.beta1, o.beta2), "capturable": capturable, "fused": fused or None}
    lr_g, lr_d = (o.lr if lr is None else lr for lr in (o.lr_g, o.lr_d))
    opt_g = torch.optim.Adam(model.generator_parameters(), lr=lr_g, **common)
    opt_d = torch.optim.Adam(model.discriminator_parameters(), lr=lr_d, **common)
    return opt_g, opt_d


def penalty_gains(cfg: Config, step: int) -> list[float]:
    """The lazy penalty, decided here only (stylegan2-ada's lazy regularisation): for each of
    the step's `train.d_steps` D steps, the gain its penalty's gradient gets. Every
    `loss.gp_every`-th D step of the run has gain gp_every, so that the penalty's weight per
    step stays `loss.gp_weight` on average; the others, and every step when the penalty is off
    (`loss.penalty=none` or `gp_weight=0`), have 0: no penalty phase, no penalty stats."""
    on = cfg.loss.penalty != "none" and cfg.loss.gp_weight > 0
    d, every = cfg.train.d_steps, cfg.loss.gp_every
    return [float(every) if on and (step * d + j) % every == 0 else 0.0 for j in range(d)]


def extra_gain(cfg: Config, step: int) -> float:
    """The lazy extra terms, decided here only: the gain of the generator step's terms beyond
    the paper at training step `step` (`loss.extra_every` N: N on every N-th step, else 0, so
    that their weight per step stays the configured one on average)."""
    every = cfg.loss.extra_every
    return float(every) if step % every == 0 else 0.0


def training_step(
    loss: AMMLoss,
    opt_d: torch.optim.Optimizer,
    opt_g: torch.optim.Optimizer,
    x: torch.Tensor,
    x_l: torch.Tensor | None = None,
    y_l: torch.Tensor | None = None,
    gains: Sequence[float] = (1.0,),
    extra: float = 1.0,
) -> dict[str, Any]:
    """One discriminator step per entry of `gains` (main + penalty with that gain, none at 0;
    each with fresh prior and encoder noise on the same batch) and one generator step, its
    extra terms with gain `extra` (none at 0)."""
    stats: dict[str, Any] = {}
    for gain in gains:
        opt_d.zero_grad(set_to_none=True)
        t = loss.tuples(x, x_l, y_l)  # the last D step's forward also serves the G step
        stats.update(loss.d_main(t))
        if gain:
            stats.update(loss.d_gp(t, gain))
        opt_d.step()
    opt_g.zero_grad(set_to_none=True)
    stats.update(loss.g_main(t, extra))
    opt_g.step()
    return stats


class TrainingStep:
    """The training step for one device, built once from the config: the model in its memory
    format (`train.memory_format`), the decoder's output bias from `train_x` (uint8) when
    `model.dec_out_bias=logodds`, the loss, the optimisers with the device's Adam options,
    compiled networks and the CUDA graph. `step(i, x[, x_l, y_l])` runs training step i (float
    images) with its penalty gains under autocast and returns its stats."""

    def __init__(
        self,
        cfg: Config,
        device: torch.device,
        class_freqs: torch.Tensor | None = None,
        train_x: torch.Tensor | None = None,
    ) -> None:
        self.cfg, self.device = cfg, device
        self.fmt = accel.memory_format(cfg, device)
        self.model = build_models(cfg, class_freqs).to(device, memory_format=self.fmt)
        self.loss = AMMLoss(self.model, cfg)
        if train_x is not None and cfg.model.dec_out_bias == "logodds":  # before the optimisers
            self.model.decoder.set_output_bias(to_float(train_x[:10000]).mean(0))
        self.graphed = accel.uses_cuda_graph(cfg, device)
        self.adam = accel.adam_flags(cfg, device)
        self.opt_g, self.opt_d = make_optimizers(self.model, cfg, **self.adam)
        accel.compile_networks(self.model, cfg)

        def step(x, x_l, y_l, flags: list[float]) -> dict[str, Any]:
            # flags: the D steps' penalty gains, then the extra terms' gain (one CUDA graph each)
            return training_step(self.loss, self.opt_d, self.opt_g, x, x_l, y_l, flags[:-1],
                                 flags[-1])  # fmt: skip

        self.run = accel.CudaGraphStep(step, self.graphed)

    def __call__(self, step: int, *batch: torch.Tensor | None) -> dict[str, Any]:
        x, x_l, y_l = (*batch, None, None)[:3]  # (x) or (x, x_l, y_l)
        with accel.autocast(self.cfg, self.device, self.graphed):
            flags = [*penalty_gains(self.cfg, step), extra_gain(self.cfg, step)]
            return self.run(x, x_l, y_l, flags)


class Stats:
    """Sums loss stats on the device; one host sync per flush instead of one per step.

    Each key is averaged over the steps that reported it: the penalty's keys exist on penalty
    steps only (loss.gp_every), so dividing them by every step would shrink them."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, stats: dict[str, Any]) -> None:
        for k, v in stats.items():
            # float: a bf16 stat (train.amp) summed in bf16 keeps 3 digits of the mean
            v = v.detach().float() if torch.is_tensor(v) else torch.tensor(float(v))
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
            self.counts[k] = self.counts.get(k, 0) + 1

    def flush(self, step: int) -> dict[str, float]:
        out = {k: float(v) / self.counts[k] for k, v in self.sums.items()}
        self.sums, self.counts = {}, {}
        bad = sorted(k for k, v in out.items() if not math.isfinite(v))
        if bad:
            raise TrainingError(f"non-finite loss at step {step}: {', '.join(bad)} (run failed)")
        return out
