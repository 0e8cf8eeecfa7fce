"""What each metric means, one line each: the report's metric list and the console's words read
this table, so that a metric is explained the same way everywhere (the names are
`amm_core.names`; docs/method.md sections 7 and 8 have the detail)."""

from __future__ import annotations

from amm_core import names

# evaluation metrics by their short name: the same words for val/ and test/
_EVAL = {
    names.ERROR_GY: "cluster error of G_y (argmax of the encoder's y, components mapped to "
    "classes): the paper's number",
    names.ERROR_BAYES: "error of eq. 18 (the Bayes rule on the code z~ under the prior's "
    "components): it needs each code near its component's mean, so on a short run it can "
    "stay far above G_y's",
    names.NMI: "normalized mutual information of G_y's assignment and the labels (1: the same "
    "partition)",
    names.ARI: "adjusted Rand index of G_y's assignment against the labels (1: the same, 0: "
    "chance)",
    names.CLUSTERS_USED: "components G_y assigns at least one image to (fewer than K: collapse)",
}

DESCRIPTIONS: dict[str, str] = {
    names.GEN_DIVERSITY: "pixel std across prior samples over the data's (about 1: varied "
    "samples; near 0: one image for all)",
    names.GEN_WITHIN: "the same within one component over within one digit (near 0: z ignored)",
    names.GEN_PURITY: "mean share of a component's samples the classifier reads as its majority "
    "digit (1: each component draws one digit)",
    names.GEN_DIGITS: "how many digits are some component's majority digit (10: all drawn)",
    names.GEN_RECON_AGREE: "share of reconstructions the classifier reads as the input's label",
    names.DIAG_D_GRAD_X: "mean per-sample norm of D's gradient in x at inference tuples",
    names.DIAG_D_GRAD_Y: "mean per-sample norm of D's gradient in y",
    names.DIAG_D_GRAD_Z: "mean per-sample norm of D's gradient in z",
    names.DIAG_MEANS_MIN_DIST: "smallest distance between two prior means, in units of sigma",
    names.DIAG_DEC_Y_SENS: "mean change per pixel of G_x(y, z) when y changes (0: y ignored)",
    names.DIAG_ENC_AGREE: "share of sampled y~ whose argmax is the mean's",
    names.DIAG_ENC_LOGIT_SIGMA: "mean std of the encoder's y logits",
    names.DIAG_Z_TO_MEAN: "mean distance of z~ to its component's mean over sigma (about "
    "sqrt(L) when codes match the prior)",
    names.DIAG_CENTROID_OFFSET: "mean distance of each component's centroid of z~ to its mean, "
    "over sigma",
    names.RESTART_CHOSEN: "the start of the restart phase the run went on with",
}


def describe(metric: str) -> str:
    """One line on what `metric` means ('test/error_bayes', 'gen/component_purity', 'nmi');
    '' for a metric without one."""
    if metric in DESCRIPTIONS:
        return DESCRIPTIONS[metric]
    split, _, short = metric.rpartition("/")
    if short in _EVAL and split in ("", *names.SPLITS):
        return _EVAL[short]
    if split.startswith("test/") or split == "test":  # test/gen/*: final.json's gen on test
        return describe(metric.removeprefix("test/"))
    return ""
