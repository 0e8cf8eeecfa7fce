"""The frozen contract between the trainer, the sweep tracking and the analysis: metric names,
MLflow tag keys and run statuses, the files a run writes, checkpoint-folder names.

Defined once here; everything that writes or reads one imports the constant. The values are
what tracked runs hold: renaming one is a breaking change for every stored run (`amm table`
must still read a sweep tracked before). Strings only: no ray or mlflow here.
"""

from pathlib import Path

# training losses (reported every train.log_every steps)
LOSS_D = "loss/D"  # discriminator main term (both games in SAMM)
LOSS_D_GP = "loss/D_gp"  # lambda-weighted penalty term
LOSS_G = "loss/G"  # all generator terms
LOSS_G_DEC = "loss/G_dec"  # decoder side: G_x and G_z(y)
LOSS_G_ENC = "loss/G_enc"  # encoder side: G_y(x) and G_z(x, .)
LOSS_G_INFO = "loss/G_info"  # extra term: CE of G_y(G_x(y, z)) against y (loss.info_weight)
LOSS_G_RECON = "loss/G_recon"  # extra term: BCE of G_x(G_y(x), G_z(x)) against x (recon_weight)
LOSS_G_LATENT = "loss/G_latent"  # extra term: ||G_z(G_x(y, z)) - z||^2 / L (latent_weight)
LOSS_G_LABEL = "loss/G_label"  # extra term (SAMM): CE of G_y(x_l) against y_l (label_weight)
LOSS_G_CENTROID = "loss/G_centroid"  # extra term: soft centroid of z~ per component vs mu_k
LOSS_G_BAYES = "loss/G_bayes"  # extra term: CE of eq. 18's posterior on z~ vs G_y's assignment
# the clustering term's value, unweighted (consist - balance h_marginal + entropy h_cond); the
# restart phase chooses the start where it is lowest (docs/method.md section 9)
LOSS_CLUSTER = "loss/cluster"
LOSS_CLUSTER_CONSIST = "loss/cluster_consist"  # extra term: KL(p(y|x) || p(y|T(x)))
LOSS_CLUSTER_HMARG = "loss/cluster_h_marginal"  # entropy of the batch-mean p(y|x)
LOSS_CLUSTER_HCOND = "loss/cluster_h_cond"  # mean entropy of p(y|x)
LOSS_CLUSTER_VAT = "loss/cluster_vat"  # extra term: KL(p(y|x) || p(y|x + r_adv)), loss.aug_vat
GP_NORM = "loss/gp_grad_norm"  # mean per-sample gradient norm at the interpolates
D_REAL = "D/real_prob"  # mean sigmoid(D) on inference tuples
D_FAKE = "D/fake_prob"  # mean sigmoid(D) on synthesis tuples

# throughput and bookkeeping
STEP = "step"  # training step the metrics belong to
EPOCH = "epoch"
IMAGES_PER_SEC = "perf/images_per_sec"
EVAL_SECONDS = "perf/eval_seconds"  # the evaluation just done (+ diagnostics, checkpoint)
TRAIN_SECONDS = "perf/train_seconds"  # final.json: wall time of the loop, evaluations included
# final.json (and the trial's tag TAG_STOP_REASON): why training ended
STOP_REASON = "stop_reason"
STOP_STEPS = "steps"  # train.steps / train.epochs reached
STOP_TIME_BUDGET = "time_budget"  # train.max_minutes spent
STOP_PLATEAU = "plateau"  # train.stop_on_plateau: validation error flat
STOP_SIGNAL = "signal"  # `amm train` got SIGINT/SIGTERM: stopped after its step, checkpoint saved
SIGNAL_NAME = "signal"  # final.json of a run a signal stopped: which one (SIGINT, SIGTERM)
# the words a person reads for each reason: amm_cli/progress.stop_words

# evaluation: the split prefix is val/ during training and test/ at the end
SPLITS = ("val", "test")
# errors are stored as fractions in [0, 1] (final.json, metrics.jsonl, MLflow); everything a
# person reads shows them in percent (amm_core/fmt.percent, `amm table`, the report)
ERROR_GY = "error_gy"  # cluster / classification error from argmax G_y(x), a fraction
ERROR_BAYES = "error_bayes"  # error from the Bayes rule of eq. 18 on z, a fraction
NMI = "nmi"
ARI = "ari"
CLUSTERS_USED = "clusters_used"  # distinct components assigned (collapse detector)
EVAL_METRICS = (ERROR_GY, ERROR_BAYES, NMI, ARI, CLUSTERS_USED)


def is_error(key: str) -> bool:
    """An error metric ('test/error_gy', 'val/error_bayes'): a fraction, shown in percent."""
    return key.rsplit("/", 1)[-1] in (ERROR_GY, ERROR_BAYES)


# MLflow 3's runs table has no display format for a metric column: the sweep driver logs each
# error also in percent under a name that says so ("test/error_gy_percent" = 100 x
# "test/error_gy"), for the UI's columns only; analysis reads the fractions and drops these
PERCENT_SUFFIX = "_percent"


def percent_key(key: str) -> str:
    """'test/error_gy' -> 'test/error_gy_percent': the UI's copy of an error in percent."""
    return key + PERCENT_SUFFIX


def is_percent_copy(key: str) -> bool:
    """A UI copy of an error in percent (`percent_key`), not a metric of the contract's own."""
    return key.endswith(PERCENT_SUFFIX) and is_error(key.removesuffix(PERCENT_SUFFIX))


def split_metric(split: str, name: str) -> str:
    """('val', 'error_gy') -> 'val/error_gy'."""
    assert split in SPLITS, split
    return f"{split}/{name}"


def has_test_metrics(result: dict) -> bool:
    """A stored result (final.json, a Ray result line) that holds the final test/* metrics."""
    return any(str(k).startswith("test/") for k in result)


VAL_ERROR_GY = split_metric("val", ERROR_GY)
TEST_ERROR_GY = split_metric("test", ERROR_GY)
TEST_ERROR_BAYES = split_metric("test", ERROR_BAYES)
TEST_NMI = split_metric("test", NMI)
TEST_ARI = split_metric("test", ARI)
TEST_CLUSTERS_USED = split_metric("test", CLUSTERS_USED)
FINAL_METRICS = (TEST_ERROR_GY, TEST_ERROR_BAYES, TEST_NMI, TEST_ARI, TEST_CLUSTERS_USED)
# final.json of a run with train.restarts > 1: the start it went on with
RESTART_CHOSEN = "restart/chosen"
# ... and what the choice read: each start's clustering term, "0: -2.0831, 1: -2.1782, ..." (a
# string: logged as the tag TAG_RESTART_SCORES)
RESTART_SCORES = "restart/scores"
# ... and each start's validation error at that evaluation, "0: 0.0352, 1: 0.1204, ..." (never
# read by the choice: for the analysis of how often a start splits; the tag
# TAG_RESTART_VAL_ERRORS; empty without a validation split)
RESTART_VAL_ERRORS = "restart/val_errors"

# diagnostics of the latent path (one batch at each evaluation; docs/method.md, "diagnostics")
DIAG_D_GRAD_X = "diag/d_grad_x"  # mean per-sample ||dD/dx|| at inference tuples
DIAG_D_GRAD_Y = "diag/d_grad_y"  # mean per-sample ||dD/dy||
DIAG_D_GRAD_Z = "diag/d_grad_z"  # mean per-sample ||dD/dz||
DIAG_MEANS_MIN_DIST = "diag/means_min_dist"  # smallest ||mu_j - mu_k|| in units of sigma
DIAG_DEC_Y_SENS = "diag/dec_y_sensitivity"  # mean |G_x(y, z) - G_x(y', z)| per pixel
DIAG_ENC_AGREE = "diag/enc_argmax_agree"  # P(argmax sampled y~ == argmax y_mu)
DIAG_ENC_LOGIT_SIGMA = "diag/enc_logit_sigma"  # mean exp(0.5 y_logvar)
DIAG_Z_TO_MEAN = "diag/z_to_mean"  # mean ||z~ - mu_(G_y(x))|| / sigma; ~sqrt(L) when matched
DIAG_CENTROID_OFFSET = "diag/centroid_offset"  # mean ||centroid of z~ in k - mu_k|| / sigma
# generation, judged by the evaluation classifier (amm_core/run/classifier.py); fractions in [0, 1]
GEN_DIVERSITY = "gen/sample_diversity"  # pixel std across prior samples / the data's (~1 good)
GEN_WITHIN = "gen/within_diversity"  # the same within one component / within one digit (z used)
GEN_PURITY = "gen/component_purity"  # mean share of a component's samples in its majority digit
GEN_DIGITS = "gen/digits_covered"  # how many digits are some component's majority digit
GEN_RECON_AGREE = "gen/recon_class_agree"  # share of reconstructions read as the input's label
GEN_METRICS = (GEN_DIVERSITY, GEN_WITHIN, GEN_PURITY, GEN_DIGITS, GEN_RECON_AGREE)
DIAG_METRICS = (
    DIAG_D_GRAD_X,
    DIAG_D_GRAD_Y,
    DIAG_D_GRAD_Z,
    DIAG_MEANS_MIN_DIST,
    DIAG_DEC_Y_SENS,
    DIAG_ENC_AGREE,
    DIAG_ENC_LOGIT_SIGMA,
    DIAG_Z_TO_MEAN,
    DIAG_CENTROID_OFFSET,
)

# every metric a run logs (the val/ and test/ forms of EVAL_METRICS included)
METRICS = frozenset(
    {LOSS_D, LOSS_D_GP, LOSS_G, LOSS_G_DEC, LOSS_G_ENC, LOSS_G_INFO, GP_NORM, D_REAL, D_FAKE}
    | {LOSS_G_RECON, LOSS_G_LATENT, LOSS_G_LABEL, LOSS_G_CENTROID, LOSS_G_BAYES}
    | {LOSS_CLUSTER, LOSS_CLUSTER_CONSIST, LOSS_CLUSTER_HMARG, LOSS_CLUSTER_HCOND}
    | {LOSS_CLUSTER_VAT}
    | {IMAGES_PER_SEC, EVAL_SECONDS, TRAIN_SECONDS, *DIAG_METRICS, *GEN_METRICS}
    | {split_metric(s, m) for s in SPLITS for m in EVAL_METRICS}
    | {RESTART_CHOSEN}
    | {split_metric("test", m) for m in GEN_METRICS}  # final.json: gen/* on test images
    | {percent_key(split_metric(s, m)) for s in SPLITS for m in (ERROR_GY, ERROR_BAYES)}  # MLflow
)
# on a sweep's parent run (sweeps/store/parent.py): best/<objective>, mean/<objective>,
# trials_finished
OBJECTIVES = (TEST_ERROR_GY, VAL_ERROR_GY)  # lower is better
TRIALS_FINISHED = "trials_finished"

# ---------------------------------------------------------------- MLflow run statuses
FINISHED, FAILED, KILLED, RUNNING = "FINISHED", "FAILED", "KILLED", "RUNNING"
UNFINISHED = "UNFINISHED"  # analysis only: a Ray trial folder with neither a result nor an error

# ---------------------------------------------------------------- MLflow tags
TAG_ROLE = "amm.role"  # ROLE_SWEEP (parent) or ROLE_TRIAL (child)
ROLE_SWEEP, ROLE_TRIAL = "sweep", "trial"
TAG_SWEEP = "amm.sweep"  # the sweep's name, on the parent and its children
TAG_PARENT = "mlflow.parentRunId"  # MLflow's own: a child's parent run
TAG_RUN_NAME = "mlflow.runName"  # MLflow's own
TAG_NUM_SEEDS = "amm.num_seeds"  # parent: seeds per cell the sweep asked for ("n=3 of 5")
TAG_TRIAL = "amm.trial_id"
TAG_VARIANT = "amm.variant"  # a trial's named override set (spec `variants`)
VARIANT = "variant"  # the spec's axis of those sets: a trial's param, analysis's column of the tag
TAG_HASH = "amm.config_hash"
TAG_NODE = "amm.node_id"  # the Ray node the trial runs on (changes after a restart elsewhere)
TAG_PID = "amm.pid"  # the trial's worker process (changes after a restart)
TAG_CKPT_STEP = "amm.checkpoint_step"  # step of the trial's last checkpoint Tune registered
TAG_RESUMED = "amm.resumed_from_step"  # the checkpoint step the trial's current attempt began at
TAG_FAILURES = "amm.failures"
TAG_ERROR = "amm.error"  # the failed trial's error text
TAG_STOP_REASON = "amm.stop_reason"  # final.json's STOP_REASON of a finished trial
TAG_RESTART_SCORES = "amm.restart_scores"  # final.json's RESTART_SCORES
TAG_RESTART_VAL_ERRORS = "amm.restart_val_errors"  # final.json's RESTART_VAL_ERRORS
# which mapping the error used: "supervised" (SAMM), "hungarian" when K == classes, else
# "majority"; a key of final.json too
ERROR_MAPPING_TAG = "error_mapping"
TAG_TRIAL_NAME = "amm.trial_name"
TAG_REUSED = "amm.reused_from"  # SWEEP/RUN_ID of the finished trial a cell was copied from
TAG_ARTIFACTS_ERROR = "amm.artifacts_error"  # the run's files could not be logged
TAG_SPEC_PATH = "amm.spec_path"
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"  # on the experiment: its view in MLflow 3's UI
# on the experiment, + a key: a view of its runs table that MLflow 3's UI opens from the URL
# parameter viewStateShareKey=<key> (filter, sort, columns; sweeps/store/tracking.share_trials_view)
TAG_SHARED_VIEW = "mlflow.sharedViewState."
TAG_STORAGE = "amm.storage"
TAG_BEST_RUN = "amm.best_run"  # parent: run name of the best trial
TAG_NOTE = "mlflow.note.content"  # MLflow's own: the run's description in the UI
TAG_GIT_COMMIT = "amm.git_commit"
TAG_MLFLOW_GIT_COMMIT = "mlflow.source.git.commit"
TAG_PYTHON = "amm.python"
TAG_VERSION = "amm.version."  # + package name
# every tag key above (tests/test_contract.py: every tag written is one of these); analysis
# reads READ_TAGS, the others are bookkeeping for the sweep driver, the MLflow UI and people
TAGS = frozenset({ERROR_MAPPING_TAG, *(v for k, v in dict(globals()).items() if k[:4] == "TAG_")})
READ_TAGS = frozenset(
    {TAG_SWEEP, TAG_PARENT, TAG_RUN_NAME, TAG_NUM_SEEDS, TAG_VARIANT, TAG_STOP_REASON, TAG_NOTE}
)

# ---------------------------------------------------------------- Tune results
# keys the trainable adds to each result: bookkeeping, never logged as metrics
RESULT_NODE = "amm_node_id"  # logged as the tag TAG_NODE
RESULT_RESUMED = "amm/resumed_from_step"  # logged as the tag TAG_RESUMED
RESULT_FINAL = "amm/final"  # 1 on the result that carries the final test/* metrics
# steps trained so far, the restart phase's other starts included (names.STEP is the run's own
# step): the sweep console's progress against the plan's config.trained_steps
RESULT_TRAINED = "amm/trained_steps"

# ---------------------------------------------------------------- files and artifacts
CONFIG_FILE = "config.json"  # the resolved config
METRICS_FILE = "metrics.jsonl"  # one line per evaluation
FINAL_FILE = "final.json"  # the final metrics
RUN_FILES = (FINAL_FILE, CONFIG_FILE, METRICS_FILE)  # logged as artifacts, in this order
FIGURES_DIR = "figures"  # artifact folder of the per-run figures (amm_core/run/figures.py)
FIG_SAMPLES = "samples_per_component.png"
FIG_BY_COMPONENT = "test_by_component.png"
FIG_RECONSTRUCTIONS = "reconstructions.png"
FIG_INTERPOLATIONS = "interpolations.png"
FIG_TSNE = "tsne.png"
FIG_CLUSTERS = "cluster_matrix.png"
FIG_CONFUSION_GY = "confusion_gy.png"
FIG_CONFUSION_BAYES = "confusion_bayes.png"
FIG_TRAINING = "training.png"
FIGURE_FILES = (  # in the order the paper shows them; training.png last
    *(FIG_SAMPLES, FIG_BY_COMPONENT, FIG_RECONSTRUCTIONS, FIG_INTERPOLATIONS, FIG_TSNE),
    *(FIG_CLUSTERS, FIG_CONFUSION_GY, FIG_CONFUSION_BAYES, FIG_TRAINING),
)
SPEC_DIR = "spec"  # parent: the sweep spec file as artifact spec/<file>
CHECKPOINTS_DIR = "checkpoints"  # of a run's folder
STARTS_DIR = "starts"  # of a run's folder: the restart phase's runs, start_K each (start_dirname)
STATE_FILE = "state.pt"  # in a checkpoint folder
SWEEP_FILE = "amm_sweep.json"  # in the sweep folder: spec, tracking URI, parent run
RUNS_FILE = "amm_runs.json"  # in the sweep folder: trial id -> MLflow run id


def checkpoint_dirname(step: int) -> str:
    """step_NNNNNNN (7 digits, so that names sort by step)."""
    return f"step_{int(step):07d}"


def start_dirname(start: int) -> str:
    """start_K: the folder of one start of the restart phase, under STARTS_DIR."""
    return f"start_{int(start)}"


def start_dir(run_dir: str | Path, start: int) -> Path:
    """run_dir/starts/start_K: the folder of one start of a run's restart phase."""
    return Path(run_dir) / STARTS_DIR / start_dirname(start)


def checkpoint_step(dirname: str) -> int | None:
    """The step of a checkpoint_dirname; None for any other name."""
    head, _, digits = dirname.partition("_")
    return int(digits) if head == "step" and digits.isdigit() else None


def trial_dirname(trial_id: str) -> str:
    """A trial's folder in the sweep folder (Tune's trial_dirname_creator)."""
    return f"trial_{trial_id}"
