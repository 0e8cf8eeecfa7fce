"""Metric names: the frozen contract between the trainer, the tracking and the analysis.

Grouped and slash-separated. Defined once here; everything that writes or reads a metric imports
the constant. Renaming one is a breaking change for every tracked run.
"""

# training losses (reported every train.log_every steps)
LOSS_D = "loss/D"  # discriminator main term (both games in SAMM)
LOSS_D_GP = "loss/D_gp"  # lambda-weighted penalty term
LOSS_G = "loss/G"  # all generator terms
LOSS_G_DEC = "loss/G_dec"  # decoder side: G_x and G_z(y)
LOSS_G_ENC = "loss/G_enc"  # encoder side: G_y(x) and G_z(x, .)
LOSS_G_INFO = "loss/G_info"  # extra term: CE of G_y(G_x(y, z)) against y (loss.info_weight)
LOSS_CLUSTER_CONSIST = "loss/cluster_consist"  # extra term: KL(p(y|x) || p(y|T(x)))
LOSS_CLUSTER_HMARG = "loss/cluster_h_marginal"  # entropy of the batch-mean p(y|x)
LOSS_CLUSTER_HCOND = "loss/cluster_h_cond"  # mean entropy of p(y|x)
GP_NORM = "loss/gp_grad_norm"  # mean per-sample gradient norm at the interpolates
D_REAL = "D/real_prob"  # mean sigmoid(D) on inference tuples
D_FAKE = "D/fake_prob"  # mean sigmoid(D) on synthesis tuples

# throughput and bookkeeping
STEP = "step"  # training step the metrics belong to
EPOCH = "epoch"
IMAGES_PER_SEC = "perf/images_per_sec"
EVAL_SECONDS = (
    "perf/eval_seconds"  # wall time of the evaluation (+ diagnostics, checkpoint) just done
)
TRAIN_SECONDS = "perf/train_seconds"  # final.json: wall time of the loop, evaluations included

# evaluation: the split prefix is val/ during training and test/ at the end
SPLITS = ("val", "test")
ERROR_GY = "error_gy"  # cluster / classification error from argmax G_y(x)
ERROR_BAYES = "error_bayes"  # error from the Bayes rule of eq. 18 on z
NMI = "nmi"
ARI = "ari"
CLUSTERS_USED = "clusters_used"  # distinct components assigned (collapse detector)
EVAL_METRICS = (ERROR_GY, ERROR_BAYES, NMI, ARI, CLUSTERS_USED)


def split_metric(split: str, name: str) -> str:
    """('val', 'error_gy') -> 'val/error_gy'."""
    assert split in SPLITS, split
    return f"{split}/{name}"


VAL_ERROR_GY = split_metric("val", ERROR_GY)
TEST_ERROR_GY = split_metric("test", ERROR_GY)
TEST_ERROR_BAYES = split_metric("test", ERROR_BAYES)
TEST_NMI = split_metric("test", NMI)
TEST_ARI = split_metric("test", ARI)
TEST_CLUSTERS_USED = split_metric("test", CLUSTERS_USED)
FINAL_METRICS = (TEST_ERROR_GY, TEST_ERROR_BAYES, TEST_NMI, TEST_ARI, TEST_CLUSTERS_USED)

# which mapping the error used: "hungarian" when K == classes, else "majority"
ERROR_MAPPING_TAG = "error_mapping"

# diagnostics of the latent path (one batch at each evaluation; docs/method.md, "diagnostics")
DIAG_D_GRAD_X = "diag/d_grad_x"  # mean per-sample ||dD/dx|| at inference tuples
DIAG_D_GRAD_Y = "diag/d_grad_y"  # mean per-sample ||dD/dy||
DIAG_D_GRAD_Z = "diag/d_grad_z"  # mean per-sample ||dD/dz||
DIAG_MEANS_MIN_DIST = "diag/means_min_dist"  # smallest ||mu_j - mu_k|| in units of sigma
DIAG_DEC_Y_SENS = "diag/dec_y_sensitivity"  # mean |G_x(y, z) - G_x(y', z)| per pixel
DIAG_ENC_AGREE = "diag/enc_argmax_agree"  # P(argmax sampled y~ == argmax y_mu)
DIAG_ENC_LOGIT_SIGMA = "diag/enc_logit_sigma"  # mean exp(0.5 y_logvar)
DIAG_METRICS = (
    DIAG_D_GRAD_X,
    DIAG_D_GRAD_Y,
    DIAG_D_GRAD_Z,
    DIAG_MEANS_MIN_DIST,
    DIAG_DEC_Y_SENS,
    DIAG_ENC_AGREE,
    DIAG_ENC_LOGIT_SIGMA,
)
