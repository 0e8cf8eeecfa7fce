"""Speed levers of the training step that leave the method alone (docs/performance.md):
bf16 autocast (`train.amp`), compiled encoder and decoder (`train.compile`), CUDA graphs of
the whole step (`train.cuda_graph`, on by default: it acts on CUDA only), the layout of the
convolutions (`train.memory_format`) and, on the CPU, keeping freed memory in the process.
Each is measured there."""

from __future__ import annotations

import ctypes
import sys
import warnings
from collections.abc import Callable
from typing import Any

import torch

from amm_core.config import Config

StepFn = Callable[..., dict[str, Any]]


def autocast(cfg: Config, device: torch.device, graphed: bool = False):
    """bf16 autocast around a training step when `train.amp=bf16`, else a no-op context.
    Inside a CUDA graph autocast's cast cache must be off (torch.cuda.graph's documentation)."""
    return torch.autocast(
        device.type,
        dtype=torch.bfloat16,
        enabled=cfg.train.amp == "bf16",
        cache_enabled=False if graphed else None,
    )


def uses_cuda_graph(cfg: Config, device: torch.device) -> bool:
    """`train.cuda_graph` acts on CUDA only."""
    return cfg.train.cuda_graph and device.type == "cuda"


def adam_flags(cfg: Config, device: torch.device) -> dict[str, bool]:
    """Adam's per-device options for `make_optimizers`: capturable under a CUDA graph, fused
    on the CPU. Also set again on resume: a checkpoint carries the device it was saved on."""
    return {"capturable": uses_cuda_graph(cfg, device), "fused": device.type == "cpu"}


def memory_format(cfg: Config, device: torch.device) -> torch.memory_format:
    """`train.memory_format`; auto is channels-last on the CPU, where oneDNN's convolutions
    otherwise reorder every input and output between layouts (about 20 % of a step), and
    contiguous on CUDA (what the GPU measurements used)."""
    fmt = cfg.train.memory_format
    if fmt == "auto":
        fmt = "contiguous" if device.type == "cuda" else "channels_last"
    return torch.channels_last if fmt == "channels_last" else torch.contiguous_format


def keep_freed_memory() -> bool:
    """glibc hands large freed blocks back to the OS, and the next step touches them again
    page by page (about 40,000 page faults per MNIST step on the CPU, docs/performance.md).
    Keep them in the process instead. Process-wide, Linux + glibc only; True when applied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) & bool(
        libc.mallopt(m_trim_threshold, 1 << 30)
    )


def compile_networks(model: torch.nn.Module, cfg: Config) -> None:
    """`train.compile`: compile encoder and decoder in place (state-dict keys unchanged). D stays
    eager: the gradient penalty needs double backward, which compiled graphs do not support. A
    graph that fails to compile runs eagerly (dynamo's suppress_errors)."""
    if cfg.train.compile:
        import torch._dynamo

        torch._dynamo.config.suppress_errors = True
        model.encoder.compile(dynamic=False)
        model.decoder.compile(dynamic=False)


class CudaGraphStep:
    """`train.cuda_graph` on a CUDA device: the whole training step (D and G phases, both
    optimizer steps) captured once per penalty schedule and then replayed.

    The MNIST step on a GPU is bound by kernel launches (about a thousand small kernels from
    Python); a replay launches them all at once. Batches are copied into static input tensors;
    the returned stats are the graph's static outputs, valid until the next call. The first
    WARMUP steps run eagerly on a side stream (cuBLAS / autograd set-up, Adam's state), as
    torch.cuda.graph's documentation asks. If a capture fails, one warning and eager steps.
    """

    WARMUP = 3

    def __init__(self, step: StepFn, enabled: bool) -> None:
        self.step = step  # step(x, x_l, y_l, flags) -> stats
        self.enabled = enabled and torch.cuda.is_available()
        self.graphs: dict[tuple[bool, ...], tuple[torch.cuda.CUDAGraph, dict[str, Any]]] = {}
        self.static: list[torch.Tensor | None] | None = None
        self.eager_steps = 0

    def __call__(self, x, x_l, y_l, flags: list[bool]) -> dict[str, Any]:
        if not self.enabled:
            return self.step(x, x_l, y_l, flags)
        if self.eager_steps < self.WARMUP:
            self.eager_steps += 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = self.step(x, x_l, y_l, flags)
            torch.cuda.current_stream().wait_stream(side)
            return out
        inputs = (x, x_l, y_l)
        if self.static is None:
            self.static = [None if t is None else t.clone() for t in inputs]
        else:
            for dst, src in zip(self.static, inputs, strict=True):
                if dst is not None:
                    dst.copy_(src)
        key = tuple(flags)
        if key not in self.graphs:
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph):
                    out = self.step(*self.static, list(key))
            except Exception as e:  # an op that cannot be captured: run eagerly from here on
                warnings.warn(
                    f"train.cuda_graph: capture failed ({type(e).__name__}: {e}); "
                    "running eager steps",
                    stacklevel=2,
                )
                self.enabled = False
                torch.cuda.synchronize()
                return self.step(x, x_l, y_l, flags)
            self.graphs[key] = (graph, out)
        graph, out = self.graphs[key]
        graph.replay()  # capturing ran nothing: this step's work happens here
        return out
