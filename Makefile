# The two commands a new user needs: `make demo` and `make test`. `make help` lists the rest.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV_VERSION := 0.13.9
VENV := .venv
# uv from PATH if present, else a private copy installed once into .tools/ with the system's pip.
UV := $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.tools/bin/uv)
# Never let uv fetch a Python build from the internet: use the machine's python3.11.
export UV_PYTHON_DOWNLOADS := never
# This environment sets PYTHONDONTWRITEBYTECODE=1; every Airflow task is a fresh process, and
# without cached bytecode each one recompiles mlflow/GX/sklearn (2-3x slower imports).
unexport PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX := $(CURDIR)/.cache/pycache

$(CURDIR)/.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --python 3.11
	@touch $@

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

.PHONY: install
install: $(VENV)/.synced ## Create .venv from uv.lock (done by every target that needs it)

.PHONY: demo
demo: $(VENV)/.synced ## Start Airflow + MLflow + the store locally, train and promote the example model
	$(VENV)/bin/mlops demo

.PHONY: env
env: ## Write .env from .env.example with new random secrets (refuses to overwrite an existing .env)
	@# Standard library only: works before (and without) the virtualenv, e.g. on a Docker-only host.
	python3 include/mlops_pipeline/devtools/envfile.py --example .env.example --output .env

.PHONY: stack
stack: $(VENV)/.synced ## The compose stack without Docker: Celery workers, PostgreSQL, Redis, S3, MLflow (`mlops stack down` stops it)
	$(VENV)/bin/mlops stack up

.PHONY: down
down: | $(VENV)/.synced ## Stop everything `make demo` started
	$(VENV)/bin/mlops down

.PHONY: test
test: $(VENV)/.synced ## Run the whole test suite (unit, DAG integrity, end-to-end, system)
	$(VENV)/bin/pytest

.PHONY: test-fast
test-fast: $(VENV)/.synced ## Run the tests not marked slow
	$(VENV)/bin/pytest -m "not slow"

.PHONY: test-system
test-system: $(VENV)/.synced ## Run only the system tests (real Airflow components + MLflow, ~3 min)
	$(VENV)/bin/pytest -m system

# local: a private Docker engine and stand-in images (what `make test` runs); official: your own
# Docker engine with Compose v2 and the official images.
BASE ?= local
.PHONY: compose-test
compose-test: $(VENV)/.synced ## docker-compose.yaml for real: build, up with 2 workers, train + score via REST, down (BASE=local|official)
	MLOPS_COMPOSE_BASE=$(BASE) $(VENV)/bin/pytest tests/deploy/test_compose_up.py

.PHONY: lint
lint: $(VENV)/.synced ## ruff (with Airflow's AIR rules) and mypy on the package
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

.PHONY: lock
lock: | $(UV) ## Re-resolve uv.lock after editing pyproject.toml
	$(UV) lock

.PHONY: clean
clean: ## Stop the demo, then remove the virtualenv, caches and demo state
	@# Stop first: without its PID records a running demo could no longer be stopped by `make down`.
	@if [ -d .demo/run ] && [ -x $(VENV)/bin/mlops ]; then $(VENV)/bin/mlops down; fi
	rm -rf $(VENV) .tools .cache .demo .pytest_cache .ruff_cache .mypy_cache
