"""One source for what the project says it measured (analysis/measured.yaml): the README's
sentence, `make demo`'s closing lines and the report's banner quote it, and docs/results.md
holds its number in the section it names; and the one table of metric descriptions
(amm_core/descriptions.py) covers every metric the report shows."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from amm_core.errors import ConfigError
from analysis import measured

REPO = Path(__file__).resolve().parents[1]


def plain(markdown: str) -> str:
    """Markdown as read: no backticks or bold, lines joined."""
    return " ".join(markdown.replace("`", "").replace("**", "").split())


def test_the_readme_says_the_headline_word_for_word():
    assert measured.headline() in plain((REPO / "README.md").read_text())


def test_docs_results_holds_the_number_in_the_section_named():
    r = measured.load().headline
    doc = (REPO / measured.RESULTS_DOC).read_text()
    sections = re.split(r"^#{2,4} ", doc, flags=re.M)  # a section under any heading level
    (section,) = [s for s in sections if s.startswith(r.section)]
    assert f"{measured.number(r).removesuffix(' %')} (n={r.n})" in section
    assert (REPO / "configs" / f"{r.preset}.yaml").is_file()


def test_make_demo_and_the_specs_quote_no_number_of_their_own():
    """`make demo` prints the headline from the file; a sweep's description (the report's
    banner) quotes no result of its own: the report adds the headline beside it."""
    out = subprocess.run(
        [sys.executable, "-m", "analysis.measured"], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout == measured.headline() + "\n"
    make = subprocess.run(["make", "-n", "demo"], cwd=REPO, capture_output=True, text=True)
    assert "-m analysis.measured" in make.stdout
    assert not re.search(r"\d\.\d\d ± \d", (REPO / "Makefile").read_text())
    for spec in (REPO / "sweeps").rglob("*.yaml"):
        for data in yaml.safe_load_all(spec.read_text()):  # cluster configs: several documents
            if isinstance(data, dict):
                assert "±" not in str(data.get("description", "")), spec


def test_bad_results_file_names_the_key(tmp_path):
    good = yaml.safe_load(measured.MEASURED_FILE.read_text())
    bad = tmp_path / "m.yaml"
    bad.write_text(yaml.safe_dump({"headline": {**good["headline"], "paper": "nope"}}))
    with pytest.raises(ConfigError, match="headline.paper.*'nope'.*mnist_amm"):
        measured.headline(bad)
    bad.write_text(yaml.safe_dump({"headline": {**good["headline"], "meen": 1.0}}))
    with pytest.raises(ConfigError, match="meen"):
        measured.load(bad)


def test_every_metric_the_report_shows_is_explained_in_one_line():
    from amm_core import names
    from amm_core.descriptions import describe

    shown = [*names.FINAL_METRICS, names.VAL_ERROR_GY, *names.GEN_METRICS, *names.DIAG_METRICS]
    shown += [names.split_metric("test", m) for m in names.GEN_METRICS]  # final.json's test/gen
    for m in shown:
        words = describe(m)
        assert words and "\n" not in words and len(words) <= 200, m
    assert "short run" in describe(names.TEST_ERROR_BAYES)  # why it can be far above G_y's
    assert describe("loss/D") == "" and describe("nope/error_gy") == ""
