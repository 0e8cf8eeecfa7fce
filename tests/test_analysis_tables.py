"""analysis.tables / paper / fetch casting on tiny hand-made run tables."""

import io
import re

import pandas as pd
import pytest

from amm_cli.analysis_cmd import resolve_axes
from amm_core.config import Config
from amm_core.errors import ConfigError
from analysis import paper as pp
from analysis import render, tables
from analysis.fetch import cast_params, cast_value

ERR = "test/error_gy"
PAPER = pp.load_paper()
MNIST_AMM = PAPER.experiments["mnist_amm"].config


def frame(cells: dict, base: dict | None = None) -> pd.DataFrame:
    """{(means, lam): [errors or None for a failed seed]} -> a runs frame."""
    rows = []
    for (means, lam), errs in cells.items():
        for seed, e in enumerate(errs):
            row = {**Config().flat(), **(base or {})}
            row.update({"prior.means": means, "loss.gp_weight": lam, "seed": seed})
            row.update(status="FINISHED" if e is not None else "FAILED", **{ERR: e})
            rows.append(row)
    return pd.DataFrame(rows)


def test_format_cell():
    assert tables.format_cell(0.0291, 0.004, 5, 5) == "2.91 ± 0.40 (n=5)"
    assert tables.format_cell(0.0291, 0.004, 3, 5) == "2.91 ± 0.40 (n=3 of 5)"
    assert tables.format_cell(0.05, float("nan"), 1, 5) == "5.00 (n=1 of 5)"
    assert tables.format_cell(float("nan"), float("nan"), 0, 5) == "— (n=0 of 5)"
    assert tables.format_cell(0.91234, 0.01, 2, 2, 1.0, 3) == "0.912 ± 0.010 (n=2)"


def test_grid_cells_best_and_missing():
    df = frame(
        {
            ("learned", 10.0): [0.02, 0.03, 0.04],
            ("learned", 1.0): [0.05, 0.07, None],
            ("random", 10.0): [0.10, 0.12, 0.14],
        }
    )
    t = tables.grid_table(df, ["loss.gp_weight"], ["prior.means"], ERR)
    assert t.header == [
        "loss.gp_weight \\ prior.means",
        "prior.means=learned",
        "prior.means=random",
    ]
    # Welch's p against the best cell (tests/test_analysis_significance.py checks the numbers)
    assert t.rows == [
        ["loss.gp_weight=1", "6.00 ± 1.41 (n=2 of 3) p=0.144", "— (n=0 of 3)"],  # no random x 1
        ["loss.gp_weight=10", "3.00 ± 1.00 (n=3)", "12.00 ± 2.00 (n=3) p=0.006*"],
    ]
    assert t.best == {(1, 1)}
    md = render.to_markdown(t)
    assert "| loss.gp_weight=10 | **3.00 ± 1.00 (n=3)** | 12.00 ± 2.00 (n=3) p=0.006* |" in md
    tex = render.to_latex(t)
    assert r"\textbf{3.00 $\pm$ 1.00 (n=3)}" in tex and r"loss.gp\_weight" in tex
    csv = pd.read_csv(io.StringIO(render.to_csv(t)))
    row = csv[(csv["loss.gp_weight"] == 10) & (csv["prior.means"] == "learned")].iloc[0]
    assert row["mean"] == pytest.approx(3.0) and row["std"] == pytest.approx(1.0)
    assert bool(row["best"]) and row["n"] == 3
    html = render.to_html(t)
    assert '<td class="best">3.00 ± 1.00 (n=3)</td>' in html


def test_text_table_for_a_terminal():
    """`amm table`'s default: aligned columns, no markdown; bold as ANSI on a terminal, "(best)"
    in a pipe; the notes wrapped at the width."""
    df = frame({("learned", 10.0): [0.02, 0.03, 0.04], ("learned", 1.0): [0.05, 0.07, 0.08]})
    t = tables.grid_table(df, ["loss.gp_weight"], ["prior.means"], ERR, title="sw: " + ERR)
    t.notes.append("word " * 60)  # a long footnote
    plain = render.to_text(t, bold=False, width=60).splitlines()
    assert plain[0] == "sw: " + ERR and not any("|" in ln or "**" in ln for ln in plain)
    header, rule, *rows = plain[2:5]
    cells = [ln for ln in plain if ln.startswith("loss.gp_weight=")]
    assert [c.split()[0] for c in cells] == ["loss.gp_weight=1", "loss.gp_weight=10"]
    # right-aligned numbers end in one column, under the header's right edge
    assert len({len(c) for c in cells} | {len(header), len(rule)}) == 1, plain
    assert cells[1].endswith("3.00 ± 1.00 (n=3) (best)") and "\033" not in "".join(plain)
    assert "bold" not in "".join(plain)  # the notes say how the best cell is marked here
    assert all(len(ln) <= 60 for ln in plain if ln.startswith("word"))
    assert sum(ln.startswith("word") for ln in plain) >= 5  # wrapped, not one 300-char line
    tty = render.to_text(t, bold=True, width=60)
    assert "3.00 ± 1.00 (n=3)\033[0m" in tty and "(best)" not in tty
    assert "(best cell in bold)" in tty
    shown = [re.sub(r"\033\[\dm", "", ln) for ln in tty.splitlines()[2:6]]
    assert len({len(ln) for ln in shown}) == 1 and " \033[1m3.00" in tty  # aligned as shown


def test_paper_beside_reproduced_cell():
    # a cell with the paper's MNIST configuration, and one with another lambda
    df = frame(
        {("learned", 10.0): [0.025, 0.030, 0.028, 0.032, 0.027], ("learned", 1.0): [0.5] * 2},
        base=MNIST_AMM,
    )
    t = tables.grid_table(df, ["loss.gp_weight"], [], ERR, paper=PAPER)
    cell = t.rows[1][1]
    assert cell.startswith("2.84 ± 0.27 (n=5) [paper AMM 2.86 ± 0.46 (n=5); Welch t=")
    assert cell.endswith("consistent with the paper]")
    assert "paper" not in t.rows[0][1]  # lambda = 1 is not the paper's setup
    d = t.data.set_index("loss.gp_weight")
    assert d.loc[10.0, "verdict"] == "consistent with the paper"
    assert d.loc[10.0, "paper_mean"] == 2.86 and pd.isna(d.loc[1.0, "verdict"])


def test_no_reproduction_says_what_differs():
    df = frame({("learned", 10.0): [0.3, 0.4]}, base={**MNIST_AMM, "model.arch": "tiny"})
    t = tables.grid_table(df, [], [], ERR, paper=PAPER)
    assert any(
        "differs in 25 epochs" in n and "model.arch=tiny (paper: mnist)" in n for n in t.notes
    )
    # a short run: its training length comes first (the paper's is not published)
    df = frame({("learned", 10.0): [0.7]}, base={**MNIST_AMM, "model.arch": "tiny"})
    df["train.steps"] = 150
    (note,) = [n for n in tables.grid_table(df, [], [], ERR, paper=PAPER).notes if "differs" in n]
    assert "differs in 150 steps (full preset mnist_amm: 27,500 steps; the paper's is not " in note
    assert note.endswith("model.arch=tiny (paper: mnist)")
    # runs a time budget stopped trained fewer steps than set: the note says how many
    df["stop_reason"] = ["time_budget"]
    (note,) = [n for n in tables.grid_table(df, [], [], ERR, paper=PAPER).notes if "differs" in n]
    assert (
        "differs in 150 steps, 1 of 1 run(s) stopped earlier by a time budget or a plateau ("
        in note
    )


def test_paper_table_1_layout():
    df = frame({("learned", 10.0): [0.05, 0.07], ("random", 10.0): [0.2, None]}, MNIST_AMM)
    t = tables.paper_layout(df, list(df.columns), 1, ERR, PAPER)
    labels = [r[0] for r in t.rows]
    assert labels[:5] == [
        "CatGAN (Springenberg, 2015)",
        "VaDE (Jiang et al., 2016)",
        "InfoGAN (Chen et al., 2016)",
        "AAE (Makhzani et al., 2016)",
        "AMM",
    ]
    assert [r[1] for r in t.rows[:5]] == [
        "9.70 ± NR",
        "5.54 ± NR",
        "5.00 ± NR",
        "4.10 ± 1.13",
        "2.86 ± 0.46 (n=5)",
    ]
    assert t.rows[5][:3] == ["AMM (ours): prior.means=learned", "6.00 ± 1.41 (n=2)", "measured"]
    # 6.00 ± 1.41 (n=2) vs 2.86 ± 0.46 (n=5): t = 3.14 / sqrt(2/2 + 0.2116/5) = 3.08, but with
    # about one degree of freedom p = 0.18: two seeds cannot tell
    assert t.rows[5][3] == (
        "paper AMM 2.86 ± 0.46 (n=5); Welch t=3.08, p=0.184: consistent with the paper"
    )
    assert t.rows[6][1] == "20.00 (n=1 of 2)"
    assert "prior.means=random (paper: learned)" in t.rows[6][3]
    assert t.best == {(4, 1)}  # the paper's AMM is the lowest error here


def test_on_a_page_the_comparisons_are_notes_and_no_column_is_empty():
    df = frame({("learned", 10.0): [0.05, 0.07]}, {**MNIST_AMM, "model.arch": "tiny"})
    t = tables.paper_layout(df, list(df.columns), 1, ERR, PAPER)
    assert t.header[-1] == "Compared with the paper" and not any(r[3] for r in t.rows[:5])
    page = tables.comparisons_as_notes(t)
    assert page.header == ["Model", "MNIST", "Source"] and page.aligns() == "lrl"
    assert [len(r) for r in page.rows] == [3] * len(t.rows) and page.best == t.best
    assert page.notes[0] == f"AMM (ours): {t.rows[5][3]}" and "model.arch=tiny" in page.notes[0]
    assert page.notes[1:] == t.notes


def test_a_column_empty_in_every_row_is_dropped():
    t = tables.Table("t", ["a", "b", "c"], [["x", "", "1"], ["y", " ", "2"]], best={(1, 2)})
    out = tables.without_empty_columns(t)
    assert out.header == ["a", "c"] and out.rows == [["x", "1"], ["y", "2"]]
    assert out.best == {(1, 1)} and out.aligns() == "lr"
    assert tables.without_empty_columns(out) is out  # nothing to drop


def test_paper_table_needs_matching_runs():
    df = frame({("learned", 10.0): [0.05]}, MNIST_AMM)
    with pytest.raises(ConfigError, match="--paper-table 2 needs runs with.*data.labelled: 0"):
        tables.paper_layout(df, list(df.columns), 2, ERR, PAPER)
    with pytest.raises(ConfigError, match="allowed: 1, 2"):
        tables.paper_layout(df, list(df.columns), 3, ERR, PAPER)


def test_paper_table_2_names_the_dataset_of_the_runs():
    """Table 2 is SVHN; MNIST runs with labels are laid out beside it, the caption says so."""
    svhn = PAPER.experiments["svhn_samm_learned"].config
    mnist = {**svhn, "data.dataset": "mnist", "model.arch": "mnist"}
    df = frame({("learned", 0.01): [0.05, 0.07]}, mnist)
    df = pd.concat([df, frame({("learned", 0.01): [0.02, 0.03]}, {**mnist, "data.labelled": 100})])
    t = tables.paper_layout(df, list(df.columns), 2, ERR, PAPER)
    assert t.title.endswith("for SVHN data. (runs: MNIST, paper: SVHN)")
    assert [r[0] for r in t.rows[5:]] == [
        "SAMM",
        "SAMM learned μ_k",
        "SAMM (ours): data.labelled=100",
        "SAMM (ours): data.labelled=1000",
    ]
    assert t.rows[7][1] == "2.50 ± 0.71 (n=2)" and t.rows[8][1] == "6.00 ± 1.41 (n=2)"
    assert "data.dataset=mnist (paper: svhn)" in t.rows[8][3]
    assert "data.labelled=100 (paper: 1000)" in t.rows[7][3]
    # runs on the paper's dataset: the paper's caption as published
    df = frame({("learned", 0.01): [0.07]}, svhn)
    t = tables.paper_layout(df, list(df.columns), 2, ERR, PAPER)
    assert t.title == PAPER.tables[2].title


def test_paper_file_matches_spec_section_8():
    e = PAPER.experiments
    assert (e["mnist_amm"].mean, e["mnist_amm"].std, e["mnist_amm"].n) == (2.86, 0.46, 5)
    assert (e["svhn_samm_fixed"].mean, e["svhn_samm_fixed"].std, e["svhn_samm_fixed"].n) == (
        7.02,
        0.17,
        10,
    )
    assert (e["svhn_samm_learned"].mean, e["svhn_samm_learned"].std) == (6.43, 0.12)
    t2 = [(r.label.split(" (")[0], r.mean, r.std) for r in PAPER.tables[2].rows[:5]]
    assert t2 == [
        ("AAE", 17.70, 0.24),
        ("ImprovedGAN", 8.11, 1.30),
        ("ALI", 7.42, 0.65),
        ("TripleGAN", 5.77, 0.17),
        ("SGAN", 5.73, 0.12),
    ]
    # every key the paper's configs name is a real config key with an allowed value
    for exp in e.values():
        Config().replace(**{k: v for k, v in exp.config.items()})


def test_cast_params_back_to_config_types():
    # MLflow's params as the sweeps log them (`stored_flat`: None as the older sentinel)
    flat = {k: str(v) for k, v in Config().stored_flat().items()}
    back = cast_params(flat)
    assert back == Config().stored_flat()
    assert cast_value("loss.gp_weight", "10") == 10.0 and isinstance(
        cast_value("loss.gp_weight", "10"), float
    )
    assert cast_value("seed", "3") == 3 and cast_value("train.figures", "False") is False
    assert cast_value("amm.other", "7") == 7 and cast_value("amm.other", "x") == "x"
    assert cast_value("seed", "oops") == "oops"  # never silently wrong


def test_resolve_axes_adds_pooled_axes_to_rows():
    params = ["seed", "loss.gp_weight", "prior.means", "model.inference"]
    varying = ["loss.gp_weight", "model.inference", "prior.means"]
    assert resolve_axes(params, varying, None, None) == (
        ["loss.gp_weight", "model.inference"],
        ["prior.means"],
        [],
    )
    assert resolve_axes(params, varying, ["prior.means"], None) == (
        ["prior.means", "loss.gp_weight", "model.inference"],
        [],
        ["loss.gp_weight", "model.inference"],
    )
    with pytest.raises(ConfigError, match="'nope' is not a param.*vary: loss.gp_weight"):
        resolve_axes(params, varying, ["nope"], None)


def test_variant_rows_do_not_drag_in_the_keys_a_variant_sets():
    # two variants, each fixing loss.penalty and model.y_noise; the lambda axis varies freely
    df = pd.DataFrame(
        {
            "variant": ["a", "a", "b", "b"],
            "loss.penalty": ["joint", "joint", "per_input", "per_input"],
            "model.y_noise": ["kendall", "kendall", "none", "none"],
            "loss.gp_weight": [1.0, 10.0, 1.0, 10.0],
        }
    )
    params = list(df.columns)
    varying = ["variant", "loss.penalty", "model.y_noise", "loss.gp_weight"]
    # default: the variant is the row axis; keys fixed within each variant are not added
    assert resolve_axes(params, varying, None, None, df) == (
        ["variant", "loss.gp_weight"],
        [],
        ["loss.gp_weight"],
    )
    # without the frame every varying key is added (nothing is known to be fixed)
    assert resolve_axes(params, varying, ["variant"], None)[2] == varying[1:]


def test_trials_table_one_row_per_trial_in_the_metrics_scale():
    df = frame({("random", 10.0): [0.0291, None], ("learned", 10.0): [0.05, 0.0312]})
    df["test/gen/digits_covered"] = [10.0, float("nan"), 9.0, 10.0]
    t = tables.trials_table(df, ["prior.means"], [ERR, "test/gen/digits_covered"])
    assert t.header == ["prior.means", "seed", "test/error_gy (%)", "test/gen/digits_covered"]
    assert t.rows == [
        ["learned", "0", "5.00", "9"],
        ["learned", "1", "3.12", "10"],
        ["random", "0", "2.91", "10"],
        ["random", "1", "— (FAILED)", "— (FAILED)"],  # a failed trial shows why, not a number
    ]
    assert list(t.data[ERR].round(4).fillna(-1)) == [0.05, 0.0312, 0.0291, -1]
    assert render.to_markdown(t).count("\n|") >= 5
