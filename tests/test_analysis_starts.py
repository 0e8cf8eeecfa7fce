"""analysis.starts on tables small enough to check by hand."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from amm_core import names
from analysis import starts as st

# trial a: start 1 looks best at step 500 but split by 1000; at 1000 start 0 is best and held.
# trial b: both starts split. Rows: trial, cell, seed, start, step, score, val_error
ROWS = [
    ("a", "c", 0, 0, 500, -2.05, 0.12),
    ("a", "c", 0, 0, 1000, -2.17, 0.03),
    ("a", "c", 0, 1, 500, -2.08, 0.05),
    ("a", "c", 0, 1, 1000, -2.14, 0.11),
    ("b", "c", 1, 0, 500, -2.00, 0.20),
    ("b", "c", 1, 0, 1000, -2.10, 0.18),
    ("b", "c", 1, 1, 500, -2.01, 0.25),
    ("b", "c", 1, 1, 1000, -2.09, 0.24),
]


def table() -> pd.DataFrame:
    return pd.DataFrame(ROWS, columns=st.COLUMNS)


def test_pairs_of_a_tag() -> None:
    assert st.parse_pairs("0: -2.0831, 1: -2.1782") == {0: -2.0831, 1: -2.1782}
    assert st.parse_pairs("") == {}


def test_wilson_interval() -> None:
    lo, hi = st.wilson(0, 10)  # (0, z^2/n / (1 + z^2/n)) for k = 0
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = st.wilson(5, 10)
    assert (lo, hi) == pytest.approx((0.2366, 0.7634), abs=1e-4)


def test_split_rate_counts_each_start_at_its_last_evaluation() -> None:
    r = st.split_rates(table()).iloc[0]
    # at 1000: a's start 1 (0.11) and both of b's split, a's start 0 (0.03) did not
    assert (r["trials"], r["starts"], r["split"], r["all_split"]) == (2, 4, 3, 1)
    assert r["rate"] == 0.75 and r["low"] < 0.75 < r["high"]


def test_the_choice_at_each_step() -> None:
    c = st.choices(table(), 500).set_index("trial")
    assert c.loc["a", "kept"] == 1 and c.loc["a", "kept_split"] and c.loc["a", "good_start"]
    assert not c.loc["b", "good_start"]  # nothing to choose from
    c = st.choices(table(), 1000).set_index("trial")
    assert c.loc["a", "kept"] == 0 and not c.loc["a", "kept_split"]
    s = st.choice_summary(table())
    assert s.to_dict("records") == [
        {"phase_steps": 1000, "step": 500, "trials": 2, "with_good_start": 1, "kept_split": 1},
        {"phase_steps": 1000, "step": 1000, "trials": 2, "with_good_start": 1, "kept_split": 0},
    ]


def test_an_export_gives_the_trials_that_recorded_both_tags() -> None:
    def trial(name: str, seed: int, tags: dict[str, str]) -> dict:
        return {"run_name": name, "seed": seed, "tags": tags,
                "params": {"train.restart_steps": "1000"}}  # fmt: skip

    both = {names.TAG_RESTART_SCORES: "0: -2.17, 1: -2.10",
            names.TAG_RESTART_VAL_ERRORS: "0: 0.03, 1: 0.12"}  # fmt: skip
    doc = {"sweep": "s", "trials": [
        trial("variant=x,seed=0", 0, both),
        trial("variant=x,seed=1", 1, {names.TAG_RESTART_SCORES: "0: -2.1, 1: -2.2"}),  # older
    ]}  # fmt: skip
    df = st.from_export(doc)
    assert list(df["start"]) == [0, 1] and set(df["cell"]) == {"s: variant=x"}
    assert list(df["step"]) == [1000, 1000] and list(df["val_error"]) == [0.03, 0.12]


def test_a_run_folder_and_the_command(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    for k, err in ((0, 0.03), (1, 0.15)):
        folder = run / names.STARTS_DIR / names.start_dirname(k)
        folder.mkdir(parents=True)
        at = (500, -2.0 - k / 10, 0.2), (1000, -2.1 - k / 100, err)  # step, score, error
        keys = names.STEP, names.LOSS_CLUSTER, names.VAL_ERROR_GY
        lines = [dict(zip(keys, a, strict=True)) for a in at]
        (folder / names.METRICS_FILE).write_text("".join(json.dumps(m) + "\n" for m in lines))
    df = st.from_run_dir(run, "t", "cell", 3)
    assert len(df) == 4 and set(df["seed"]) == {3}
    path = tmp_path / "starts.json"
    path.write_text(json.dumps({"starts": df.to_dict("records")}))
    assert st.main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "| cell | 1 | 2 | 1 | 0.500 |" in out
    assert "| 1000 | 500 | 1 | 1 | 1 |" in out  # start 1 led at 500 and split
    assert st.main([str(tmp_path / "nope.json")]) == 2
    (tmp_path / "empty.json").write_text(json.dumps({"starts": []}))
    assert st.main([str(tmp_path / "empty.json")]) == 2
    assert "no starts" in capsys.readouterr().err
