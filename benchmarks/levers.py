"""Per-network cost of the CPU/GPU levers docs/performance.md discusses (not a test).

    .venv/bin/python benchmarks/levers.py --threads 1

For each lever (torch's dropout vs byte masks, bfloat16 autocast, channels-last memory format),
times forward + backward of the encoder, the decoder, D, and the gradient-penalty pass (D with a
double backward) of the MNIST architecture on a batch of 100, and prints one JSON line per
lever with milliseconds per network. Random inputs: cost does not depend on pixel values.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import torch

from amm_core.config import load_config
from amm_core.model.models import build_models
from amm_core.run.accel import keep_freed_memory

LEVERS = {
    "dropout=torch": (["model.dropout_impl=torch"], False, False),
    "dropout=bytes": (["model.dropout_impl=bytes"], False, False),
    "bf16 autocast": (["model.dropout_impl=bytes"], True, False),
    "channels_last": (["model.dropout_impl=bytes"], False, True),
}


def _ms(fn, reps: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return round((time.perf_counter() - t0) / reps * 1000, 1)


def measure(config: str, overrides: list[str], bf16: bool, cl: bool, reps: int) -> dict:
    torch.manual_seed(0)
    cfg = load_config(config, overrides)
    m = build_models(cfg).train()
    if cl:
        m = m.to(memory_format=torch.channels_last)
    x = torch.rand(100, 1, 28, 28)
    y, z = (v.detach() for v in m.prior.sample(100))
    ctx = (lambda: torch.autocast("cpu", torch.bfloat16)) if bf16 else contextlib.nullcontext

    def enc():
        with ctx():
            o = m.encoder(x)
        (o.y.float().sum() + o.z.float().sum()).backward()

    def dec():
        with ctx():
            o = m.decoder(y, z)
        o.float().sum().backward()

    def disc():
        with ctx():
            o = m.disc(x, y, z)
        o.float().sum().backward()

    def gp():
        xh, yh, zh = (v.clone().requires_grad_() for v in (x, y, z))
        with ctx():
            o = m.disc(xh, yh, zh)
        g = torch.autograd.grad(o.float().sum(), [xh, yh, zh], create_graph=True)
        sum(v.pow(2).sum() for v in g).backward()

    return {k: _ms(f, reps) for k, f in (("enc", enc), ("dec", dec), ("disc", disc), ("gp", gp))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/mnist_amm.yaml")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as `amm train` on the CPU
    for name, (over, bf16, cl) in LEVERS.items():
        ms = measure(args.config, over, bf16, cl, args.reps)
        print(json.dumps({"lever": name, "threads": args.threads, "ms_fwd_bwd": ms}), flush=True)


if __name__ == "__main__":
    main()
