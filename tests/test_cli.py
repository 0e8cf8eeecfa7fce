"""The one `amm` parser: `--set` defined once and `--data-dir` on every command that trains;
`amm sweep resume --data-dir` checks the new root before anything starts; a resume refuses a Ray
outside the tested range (its private Tuner call), naming the range."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import old_sweep

from amm_cli.main import build_parser
from amm_cli.main import main as amm

REPO = Path(__file__).resolve().parent.parent


def test_set_is_defined_once():
    defined = [p for p in (REPO / "amm_cli").glob("*.py") if '"--set"' in p.read_text()]
    assert [p.name for p in defined] == ["options.py"]


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "configs/smoke.yaml"],
        ["sweep", "plan", "smoke"],
        ["sweep", "run", "smoke"],
        ["sweep", "resume", "x"],
    ],
)
def test_every_training_command_takes_data_dir(argv):
    assert build_parser().parse_args([*argv, "--data-dir", "/d"]).data_dir == "/d"


def test_resume_with_a_missing_data_dir_is_bad_input(tmp_path, capsys):
    old_sweep(tmp_path, "s")
    missing = tmp_path / "nowhere"
    args = ["--storage", str(tmp_path), "--data-dir", str(missing), "--verbose"]
    code = amm(["sweep", "resume", "s", *args])
    err = capsys.readouterr().err
    assert code == 2 and f"data root {missing} does not exist" in err
    assert not (tmp_path / "s.lock").exists()


def test_resume_refuses_an_untested_ray(monkeypatch, capsys):
    import ray

    monkeypatch.setattr(ray, "__version__", "9.1.0")
    assert amm(["sweep", "resume", "any", "--verbose"]) == 2
    assert "tested with ray>=2.52,<2.61; this is ray 9.1.0" in capsys.readouterr().err
