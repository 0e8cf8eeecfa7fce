"""Images per second of the full training step (D step with penalty + generator step).

    .venv/bin/python benchmarks/train_throughput.py --config configs/mnist_amm.yaml \
        --steps 30 --rounds 3

Times the project's step (`amm_core.run.step.TrainingStep`, as `amm train` builds it: the loss
phases of `AMMLoss`, with the config's settings, i.e. what a user gets) and, beside it, a
straightforward PyTorch step of the same maths (one encoder/decoder forward shared by the D and
G updates, torch's own dropout: `model.dropout_impl=torch`), on the CPU and, when present, the
GPU, and prints their ratio.
Random uint8 images of the right shape: throughput does not depend on pixel values, and the
benchmark needs no dataset.
This is a benchmark to run, not a test; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from amm_core.config import DATASET_SHAPES, load_config
from amm_core.run.accel import CudaGraphStep, keep_freed_memory
from amm_core.run.step import TrainingStep, make_optimizers


def straightforward_step(model, loss, opt_d, opt_g, x, gp_weight):
    """The textbook step: one generator forward, reused for the D and G updates."""
    enc = model.encoder(x)
    y_p, z_p = model.prior.sample(x.shape[0])
    x_p = model.decoder(y_p, z_p)
    d_q = model.disc(x, enc.y.detach(), enc.z.detach())
    d_p = model.disc(x_p.detach(), y_p, z_p.detach())
    loss_d = F.softplus(-d_q).mean() + F.softplus(d_p).mean()
    alpha = torch.rand(x.shape[0], 1, device=x.device)
    xi = (
        alpha.view(-1, 1, 1, 1) * x + (1 - alpha.view(-1, 1, 1, 1)) * x_p.detach()
    ).requires_grad_()
    yi = (alpha * enc.y.detach() + (1 - alpha) * y_p).requires_grad_()
    zi = (alpha * enc.z.detach() + (1 - alpha) * z_p.detach()).requires_grad_()
    grads = torch.autograd.grad(model.disc(xi, yi, zi).sum(), (xi, yi, zi), create_graph=True)
    norm = torch.cat([g.flatten(1) for g in grads], 1).norm(dim=1)
    loss_d = loss_d + gp_weight * ((norm - 1) ** 2).mean()
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    d_q = model.disc(x, enc.y, enc.z)
    d_p = model.disc(x_p, y_p, z_p)
    loss_g = F.softplus(d_q).mean() + F.softplus(-d_p).mean()
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()


class Bench:
    """One variant's model, optimisers and data on one device, warmed up once."""

    def __init__(self, cfg, device: torch.device, which: str) -> None:
        torch.manual_seed(0)
        if which == "straightforward":  # plain PyTorch: F.dropout's masks, fp32, eager
            cfg = cfg.replace(
                **{
                    "model.dropout_impl": "torch",
                    "train.amp": "none",
                    "train.compile": False,
                    "train.cuda_graph": False,
                    "train.memory_format": "contiguous",
                }
            )
        self.cfg, self.device, self.which = cfg, device, which
        self.project = TrainingStep(cfg, device)  # as `amm train` builds it
        self.model, self.loss, self.fmt = self.project.model, self.project.loss, self.project.fmt
        self.model.train()
        self.opt_g, self.opt_d = self.project.opt_g, self.project.opt_d
        if which == "straightforward":  # textbook: plain Adam
            self.opt_g, self.opt_d = make_optimizers(self.model, cfg)
        shape = (cfg.train.batch_size, *DATASET_SHAPES[cfg.data.dataset])
        self.data = torch.randint(0, 256, (8, *shape), dtype=torch.uint8, device=device)
        self.steps = 0  # steps taken, warm-up and all rounds: the penalty schedule runs on
        # warm-up (allocator, cuDNN, graph capture of both penalty schedules)
        for _ in range(CudaGraphStep.WARMUP + cfg.loss.gp_every + 1):
            self.step()

    def step(self) -> None:
        i, self.steps = self.steps, self.steps + 1
        x = self.data[i % 8].float().div_(255).contiguous(memory_format=self.fmt)
        if self.which == "project":
            self.project(i, x)
        else:
            straightforward_step(
                self.model, self.loss, self.opt_d, self.opt_g, x, self.cfg.loss.gp_weight
            )

    def images_per_sec(self, steps: int) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return steps * self.cfg.train.batch_size / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/mnist_amm.yaml")
    ap.add_argument("--steps", type=int, default=30, help="steps per timed round")
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="timed rounds per variant, alternating project / straightforward (load on a "
        "shared machine hits both alike); the best and the median round are reported",
    )
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--device", choices=("all", "cpu", "cuda"), default="all")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # process-wide, as `amm train` does on the CPU: both steps below get it alike
    kept = keep_freed_memory()
    cfg = load_config(args.config, args.overrides)
    cuda = [torch.device("cuda")] if torch.cuda.is_available() else []
    devices = {"cpu": [torch.device("cpu")], "cuda": cuda, "all": [torch.device("cpu"), *cuda]}
    devices = devices[args.device]
    for dev in devices:
        benches = [Bench(cfg, dev, which) for which in ("project", "straightforward")]
        seen: dict[str, list[float]] = {b.which: [] for b in benches}
        for _ in range(args.rounds):
            for b in benches:
                seen[b.which].append(b.images_per_sec(args.steps))
        for which, ips in seen.items():
            row = {
                "device": dev.type,
                "step": which,
                "images_per_sec_best": round(max(ips), 1),
                "images_per_sec_median": round(statistics.median(ips), 1),
                "rounds": [round(v, 1) for v in ips],
            }
            print(json.dumps(row), flush=True)
        med = {w: statistics.median(v) for w, v in seen.items()}
        ratio = med["project"] / med["straightforward"]
        print(
            json.dumps({"device": dev.type, "ratio_project_over_straightforward": round(ratio, 2)})
        )
    print(
        f"config={args.config} arch={cfg.model.arch} batch={cfg.train.batch_size} "
        f"steps={args.steps} rounds={args.rounds} threads={torch.get_num_threads()} "
        f"amp={cfg.train.amp} compile={cfg.train.compile} cuda_graph={cfg.train.cuda_graph} "
        f"dropout={cfg.model.dropout_impl} memory_format={cfg.train.memory_format} "
        f"keep_freed_memory={kept} torch={torch.__version__}"
    )


if __name__ == "__main__":
    main()
