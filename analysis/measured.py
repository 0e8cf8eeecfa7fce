"""What the project says it measured (measured.yaml): one sentence that the README, `make
demo`'s last lines (`python -m analysis.measured`) and the report's banner all quote, so that
they cannot disagree."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from amm_core.errors import ConfigError
from amm_core.loader import build, read_yaml, within

MEASURED_FILE = Path(__file__).with_name("measured.yaml")
RESULTS_DOC = "docs/results.md"


@dataclass(frozen=True)
class Result:
    """A result of ours: a preset's mean ± std (percent) of `metric` over n seeds."""

    preset: str
    dataset: str
    metric: str
    mean: float
    std: float
    n: int
    cost: str
    section: str  # the section of docs/results.md with its command and per-seed table
    paper: str = ""  # the paper's experiment it compares with (paper_results.yaml's key)


@dataclass(frozen=True)
class Measured:
    headline: Result


def load(path: Path = MEASURED_FILE) -> Measured:
    with within(str(path)):
        return build(Measured, read_yaml(path, "results file"))


def number(r: Result) -> str:
    """'2.51 ± 0.45 %'."""
    return f"{r.mean:.2f} ± {r.std:.2f} %"


def headline(path: Path = MEASURED_FILE) -> str:
    """The one sentence on what the default preset reaches, as the README prints it."""
    r = load(path).headline
    paper = ""
    if r.paper:
        from analysis.paper import load_paper

        exps = load_paper().experiments
        if r.paper not in exps:
            raise ConfigError(
                f"results file '{path}': key 'headline.paper': {r.paper!r} is not an experiment "
                f"of paper_results.yaml ({', '.join(exps)})"
            )
        e = exps[r.paper]
        paper = f" (the paper's Table {e.table}: {e.mean:.2f} ± {e.std:.2f} %)"
    return (
        f"configs/{r.preset}.yaml reaches {number(r)} {r.dataset} test error over {r.n} seeds"
        f'{paper}, {r.cost} ({RESULTS_DOC}, "{r.section}").'
    )


if __name__ == "__main__":  # `make demo`'s closing line
    print(headline())
