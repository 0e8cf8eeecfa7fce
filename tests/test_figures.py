"""Per-run figures from a `tiny` model on real MNIST test images: every PNG is a valid image."""

import gzip
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from amm_core import names
from amm_core.config import Config
from amm_core.model.models import build_models
from amm_core.names import FIGURE_FILES
from amm_core.run.figures import mosaic, training_figure, write_run_figures

N = 160  # test images: enough for every figure, few for a fast t-SNE


@pytest.fixture(scope="module")
def mnist_test(data_root):
    raw = data_root / "mnist" / "MNIST" / "raw"
    with gzip.open(raw / "t10k-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16)[: N * 784].reshape(N, 1, 28, 28)
    with gzip.open(raw / "t10k-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)[:N]
    return torch.from_numpy(x.copy()), torch.from_numpy(y.astype(np.int64))


@pytest.mark.parametrize("labelled", [0, 1000])
def test_every_figure_is_a_png(tmp_path, mnist_test, labelled):
    torch.set_num_threads(1)
    cfg = Config().replace(**{"model.arch": "tiny", "seed": 3, "data.labelled": labelled})
    torch.manual_seed(0)
    model = build_models(cfg).train()
    x, y = mnist_test
    splits = SimpleNamespace(test_x=x, test_y=y, n_classes=10)
    paths = write_run_figures(model, splits, tmp_path / "figures", cfg, max_points=N)
    assert [p.name for p in paths] == list(FIGURE_FILES)
    for p in paths:
        with Image.open(p) as im:
            im.verify()
            assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
    assert model.training  # put back in the mode it came in


def test_mosaic_layout():
    a, b = torch.zeros(1, 2, 3), torch.ones(1, 2, 3)
    m = mosaic([[a, b], [None, a]], pad=1)
    assert m.shape == (2 * 3 + 1, 2 * 4 + 1, 1)
    assert (m[1:3, 1:4] == 0).all() and (m[1:3, 5:8] == 1).all()
    assert (m[4:6, 1:4] == 1).all()  # a blank cell stays white


def test_bad_test_data(tmp_path):
    cfg = Config().replace(**{"model.arch": "tiny"})
    model = build_models(cfg)
    with pytest.raises(ValueError, match="one length"):
        write_run_figures(model, (torch.zeros(4, 1, 28, 28), torch.zeros(3)), tmp_path, cfg)


def test_training_figure_plots_errors_in_percent():
    history = [
        {names.STEP: 200, names.VAL_ERROR_GY: 0.5, names.GEN_DIVERSITY: 0.25},
        {names.STEP: 400, names.VAL_ERROR_GY: 0.125, names.GEN_DIVERSITY: 0.75},
    ]
    axes = {ax.get_title(): ax for ax in training_figure(history).axes if ax.get_visible()}
    err = axes[f"{names.VAL_ERROR_GY} (%)"]
    assert list(err.lines[0].get_ydata()) == [50.0, 12.5]
    assert err.get_ylabel() == "%"
    div = axes[names.GEN_DIVERSITY]  # not an error: plotted as stored
    assert list(div.lines[0].get_ydata()) == [0.25, 0.75] and div.get_ylabel() == ""
