"""SVHN end to end on small .mat files: the SVHN presets and the paper's SVHN specs train,
evaluate and write their files (the tiny network, a few steps), so that a user with SVHN on disk
changes only the data root. The presets keep their 1,000 labels: the files hold enough images."""

import json
from pathlib import Path

import pytest
from helpers import write_svhn

from amm_cli.main import main as amm
from amm_core import names
from amm_core.run.train import run
from sweeps.planning.spec import load_spec

REPO = Path(__file__).resolve().parent.parent
# a few steps of the tiny network (it takes 3x32x32 images) on the presets' own settings
TINY = {
    "model.arch": "tiny",
    "data.val_size": 100,
    "train.steps": 3,
    "train.eval_every": 3,
    "train.batch_size": 16,
    "train.labelled_batch_size": 16,
    "train.eval_batch_size": 500,
}


@pytest.fixture(scope="module")
def svhn_root(tmp_path_factory) -> Path:
    """train (1,200 images: 100 for validation, 1,000 of the rest labelled) and test (200)."""
    root = tmp_path_factory.mktemp("svhn_data")
    write_svhn(root / "svhn" / "train_32x32.mat", 1200, 0)
    write_svhn(root / "svhn" / "test_32x32.mat", 200, 1)
    return root


def test_svhn_samm_preset_trains_end_to_end(svhn_root, tmp_path, capsys, monkeypatch):
    """`amm train` on the learned-means SAMM preset: figures and the generation metrics (their
    classifier trained on these files, cached under tmp_path) included."""
    monkeypatch.setenv("AMM_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "run"
    sets = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
    argv = ["train", "configs/svhn_samm_learned.yaml", *sets, "--set", "train.tsne_points=50"]
    rc = amm([*argv, "--data-dir", str(svhn_root), "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    final = json.loads((out / names.FINAL_FILE).read_text())
    assert final[names.ERROR_MAPPING_TAG] == "supervised" and final[names.STEP] == 3
    assert 0 <= final[names.TEST_ERROR_GY] <= 1 and final[names.TEST_CLUSTERS_USED] >= 1
    assert names.split_metric("test", names.GEN_DIVERSITY) in final
    cfg = json.loads((out / names.CONFIG_FILE).read_text())
    assert cfg["data"]["dataset"] == "svhn" and cfg["data"]["labelled"] == 1000
    assert cfg["prior"]["py"] == "class_frequencies" and cfg["loss"]["gp_weight"] == 0.01
    assert {p.name for p in (out / names.FIGURES_DIR).iterdir()} == set(names.FIGURE_FILES)
    rows = (out / names.METRICS_FILE).read_text().splitlines()
    assert len(rows) == 1 and names.VAL_ERROR_GY in json.loads(rows[0])


@pytest.mark.parametrize("spec_file", ["svhn_samm.yaml", "svhn_amm_unsup18.yaml"])
def test_svhn_paper_specs_train_every_cell(svhn_root, tmp_path, spec_file):
    """Each cell of the paper's SVHN specs (seed 0), as its sweep builds it with the data root."""
    spec = load_spec(REPO / "sweeps" / "paper" / spec_file, {**TINY, "seed": 0})
    cells = spec.cells()
    assert len(cells) == (2 if spec.variants else 1)
    for i, cell in enumerate(cells):
        cfg = spec.trial_config(cell, data_dir=str(svhn_root)).replace(
            **{"train.figures": False, "train.gen_metrics": False}
        )
        final = run(cfg, tmp_path / str(i)).final
        labelled = cfg.data.labelled > 0
        # SAMM: the identity mapping; the 18 unsupervised components: majority vote
        assert final[names.ERROR_MAPPING_TAG] == ("supervised" if labelled else "majority")
        assert (tmp_path / str(i) / names.FINAL_FILE).is_file()
        assert 0 <= final[names.TEST_ERROR_GY] <= 1
