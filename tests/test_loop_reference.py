"""The training loop gives the numbers it gave before it was rearranged (state, stop policy,
reports, hooks): short runs of two shipped presets, their metrics.jsonl and final.json values
bit for bit against loop_reference.json (perf/* aside: wall-clock figures). The reference was
computed by the loop as it was before; a change of the method's numbers changes it on purpose,
with `python tests/test_loop_reference.py OUT_DIR > tests/loop_reference.json`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from amm_core.config import load_config
from amm_core.run.train import run

REFERENCE = json.loads(Path(__file__).with_name("loop_reference.json").read_text())
REPO = Path(__file__).resolve().parent.parent


def _strip(m: dict) -> dict:
    return {k: v for k, v in m.items() if not k.startswith("perf/")}


def short_run(name: str, out: Path) -> dict:
    """The reference's record of one preset: its config hash, metrics.jsonl and final.json."""
    overrides = REFERENCE[name]["overrides"]
    cfg = load_config(REPO / "configs" / f"{name}.yaml", overrides)
    run(cfg, out)
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    final = json.loads((out / "final.json").read_text())
    return {"overrides": overrides, "hash": cfg.hash(), "metrics": [_strip(m) for m in lines],
            "final": _strip(final)}  # fmt: skip


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_a_short_run_gives_the_reference_numbers(name, tmp_path, data_root, one_thread):
    got = short_run(name, tmp_path / name)
    want = REFERENCE[name]
    assert got["hash"] == want["hash"]
    assert len(got["metrics"]) == len(want["metrics"])
    for line, ref in zip(got["metrics"], want["metrics"], strict=True):
        assert line == ref  # the same keys, values equal bit for bit (floats as JSON keeps them)
    assert got["final"] == want["final"]


if __name__ == "__main__":
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    print(json.dumps({n: short_run(n, out / n) for n in sorted(REFERENCE)}, indent=1))
