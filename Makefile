# Quickstart: `make demo` (set-up + the smoke sweep on local Ray, MLflow in SQLite) and `make test`.
# Both create .venv and install through scripts/install.sh, the same script CI and the image use.
PY := .venv/bin/python
AMM := .venv/bin/amm
# Data root: $AMM_DATA_DIR, else ../shared/data when it exists (this project's checkout), else ./data
AMM_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),$(abspath data))
export AMM_DATA_DIR
# Tests may run torch on both cores; keep BLAS from oversubscribing them.
export OMP_NUM_THREADS ?= 1

.PHONY: install test demo lint format bench clean

install:
	bash scripts/install.sh

test: install
	$(PY) -m pytest -q

demo: install
	$(AMM) sweep run sweeps/smoke.yaml --name demo-$$(date +%Y%m%d-%H%M%S) --tracking-uri sqlite:///$(CURDIR)/mlflow.db
	@echo "MLflow UI: .venv/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db"

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format: install
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

bench: install
	$(PY) benchmarks/train_throughput.py --config configs/mnist_amm.yaml --steps 20

clean:
	rm -rf runs mlflow.db .pytest_cache
