# Quickstart: `make demo` (set-up + the smoke sweep on local Ray, MLflow in SQLite) and `make test`.
# Both create .venv and install through scripts/install.sh, the same script CI and the image use.
PY := .venv/bin/python
AMM := .venv/bin/amm
MLFLOW := .venv/bin/mlflow
# Data root: $AMM_DATA_DIR, else ../shared/data when it exists (this project's checkout), else ./data
AMM_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),$(abspath data))
export AMM_DATA_DIR
# Tests may run torch on both cores; keep BLAS from oversubscribing them.
export OMP_NUM_THREADS ?= 1

.PHONY: install test test-fast demo lint format bench results clean

install:
	bash scripts/install.sh

test: install
	$(PY) -m pytest -q --durations=15

# The inner loop: no MNIST, no clusters, no training runs (about a minute on 2 cores).
test-fast: install
	$(PY) -m pytest -q -m "not slow"

# The demo: MNIST fetched into the data root when missing (one line says so), then the demo
# sweep (sweeps/demo.yaml: 4 trials of a tiny network on local Ray, each stopped on its step
# budget, so that its numbers are the same on any machine; about 5 minutes on 2 idle cores,
# tracked in ./mlflow.db), its mean ± std table, an offline HTML report under runs/reports/ and
# the commands that show the rest (the MLflow UI, the sweep's status).
DEMO_DB := sqlite:///$(CURDIR)/mlflow.db
demo: install
	@set -e; name=demo-$$(date +%Y%m%d-%H%M%S); \
	$(AMM) data get mnist >/dev/null; \
	$(AMM) sweep run sweeps/demo.yaml --name $$name --tracking-uri $(DEMO_DB) --no-next; \
	echo; $(AMM) table $$name --tracking-uri $(DEMO_DB); \
	echo "A demo budget (1000 steps of a tiny network per trial: the same numbers on any machine),"; \
	echo "not a result. What the project measured (analysis/measured.yaml):"; \
	$(PY) -m analysis.measured | fold -s -w 100; \
	$(AMM) report $$name --tracking-uri $(DEMO_DB); \
	echo; $(AMM) sweep next $$name --seen table,report; \
	echo "(commands run from this folder as shown; plain amm/mlflow after: source .venv/bin/activate)"

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format: install
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

# Prints images/s of the project's step and of a straightforward step, and their ratio, with 1 and
# 2 threads (docs/performance.md). Run it on an idle machine. 24 steps a round: a multiple of the
# lazy penalty's period (loss.gp_every), so every round has the same share of penalty steps.
bench: install
	$(PY) benchmarks/train_throughput.py --config configs/mnist_amm.yaml --steps 24 --rounds 3 --threads 1
	$(PY) benchmarks/train_throughput.py --config configs/mnist_amm.yaml --steps 24 --rounds 3 --threads 2

# The study tables of docs/results.md, rebuilt from the committed sweep exports (results/studies/,
# written by `amm sweep export`): no training, no tracking store of one's own.
# Each also gets its report page (runs/reports/) and its plots as PNG files (runs/plots/NAME/);
# then how often the restart phase's starts split (results/restarts/starts.json, analysis.starts).
results: install
	@set -e; for f in results/studies/*.json; do \
	  echo "== $$f"; \
	  $(AMM) table $$f --format md --metric test/error_gy --metric test/error_bayes --metric test/gen/component_purity --metric test/gen/within_diversity; \
	  $(AMM) report $$f --save-plots runs/plots/$$(basename $$f .json); \
	  echo; \
	done; \
	echo "== results/restarts/starts.json"; $(PY) -m analysis.starts results/restarts/starts.json

clean:
	rm -rf runs mlflow.db .pytest_cache
