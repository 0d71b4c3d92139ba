# Every target creates the virtual environment it needs on first use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: demo test test-unit test-integration test-e2e lint bench build cluster-up cluster-down clean

$(STAMP): pyproject.toml
	@echo "[venv] installing swarm-operator and its dev dependencies into $(VENV) …"
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/pip install -q -U pip setuptools wheel
	@$(BIN)/pip install -q -e '.[dev]'
	@touch $@

## demo: the main job: a local cluster with the operator and a sample SwarmCluster
demo: $(STAMP)
	@$(BIN)/python -m localcluster.demo

## test: the whole suite: lint, unit, then the integration tier on a local cluster
test: lint test-unit test-integration

test-unit: $(STAMP)
	@$(BIN)/pytest -q tests/unit

test-integration: $(STAMP) build
	@$(BIN)/python -m localcluster test -- -q tests/integration

lint: $(STAMP)
	@$(BIN)/ruff check operator localcluster tests bench
	@$(BIN)/mypy

bench: $(STAMP) build
	@$(BIN)/python -m localcluster run -- $(BIN)/python bench/reconcile.py

## build: the control plane from Go modules (cached by version)
build: $(STAMP)
	@$(BIN)/python -m localcluster build

cluster-up: build
	@$(BIN)/python -m localcluster up

cluster-down: $(STAMP)
	@$(BIN)/python -m localcluster down

clean: cluster-down
	rm -rf $(VENV) build dist *.egg-info
