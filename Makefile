# Every target creates the virtual environment it needs on first use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: demo test test-static unit-helm test-unit test-clean-clone test-integration test-kueue build-kueue test-e2e test-chaos test-packaging test-image image kind-e2e lint generate bench bench-scale bench-autoscale-real bench-jobs-real bench-recovery bench-recovery-kind build cluster-up cluster-down clean

# hack/venv.py runs this with $(BIN) first on PATH; the stamp is written only once `ray` and `swarm-operator`
# exist and import. It takes a lock (two makes at once wait for each other), starts over after an
# interrupted set-up, and an interrupt stops pip's whole process group.
VENV_INSTALL ?= python -m ensurepip --default-pip >/dev/null && pip install -q -U pip setuptools wheel \
	&& pip install -q -e '.[dev]'
export VENV_INSTALL  # read by hack/venv.py, which make then starts without a shell in between

$(STAMP): pyproject.toml hack/venv.py
	@echo "[venv] installing swarm-operator and its dev dependencies into $(VENV) …"
	@$(PY) hack/venv.py $(VENV) $@ --entry-point ray --entry-point swarm-operator --deps $^

## demo: the main job end to end: local cluster, process nodes, operator, the GPU+CPU sample as a Ray cluster, a Ray job
demo: $(STAMP)
	@$(BIN)/python -m localcluster.demo

## test: the whole suite: lint, unit, the integration tier, then real Ray end to end on a local cluster
test: build test-static test-integration test-e2e test-chaos test-packaging

# lint, test-unit and test-clean-clone at once: each is one process on one core (mypy, two pytest runs), and none
# touches what another reads; -O keeps each one's output together.
test-static: $(STAMP)
	@echo "[test] lint, the unit tier and its clean-clone run at once (~2 min; each one's output when it ends)"
	@$(MAKE) --no-print-directory -j3 -O lint test-unit test-clean-clone

# Every tier runs under hack/leftovers.py: it fails when the tier left anything new in the checkout
# (`git status --porcelain --ignored`; caches such as __pycache__ and .pytest_cache aside).
LEFTOVERS := $(BIN)/python hack/leftovers.py

# The helm chart's tests need helm: the one on PATH (or $$HELM), else built from Go modules like the control
# plane (cached; without Go the build says so and the target fails rather than skipping those tests).
unit-helm: $(STAMP)
	@$(BIN)/python -c 'from localcluster.versions import helm_binary; raise SystemExit(helm_binary() is None)' \
		|| $(BIN)/python -m localcluster build helm

test-unit: $(STAMP) unit-helm
	@$(LEFTOVERS) -- $(BIN)/pytest -q tests/unit

# The unit tier in a fresh clone of HEAD (no .venv there), run with this .venv's Python: it must make no
# .venv there and leave nothing behind.
test-clean-clone: $(STAMP) unit-helm
	@$(LEFTOVERS) --clone -- $(abspath $(BIN))/python -m pytest -q tests/unit

test-integration: $(STAMP) build build-kueue
	@$(LEFTOVERS) -- $(BIN)/python -m localcluster test -- -q --durations=40 tests/integration

## test-kueue: only the integration tests of queued SwarmJobs and SwarmClusters, against the real Kueue (built on first use, cached)
test-kueue: $(STAMP) build build-kueue
	@$(LEFTOVERS) -- $(BIN)/python -m localcluster test -- -q -m kueue tests/integration

# Real Ray in pods on process nodes (root, iproute2), and the autoscaler's GCS client against real Ray; Kueue (built on
# first use, cached) for the preemption of a queued SwarmJob on real Ray.
test-e2e: $(STAMP) build build-kueue
	@$(LEFTOVERS) -- $(BIN)/python -m localcluster test -- -q --durations=0 tests/e2e tests/ray

# Chaos (seeded; CHAOS_SEED=…): kill -9 the operator, restart kube-apiserver and etcd, conflicting writers,
# scale-down under running Ray tasks; each time everything converges. ~5 min; -m "not ray" skips real Ray.
test-chaos: $(STAMP) build
	@$(LEFTOVERS) -- $(BIN)/python -m localcluster test -- -q --durations=10 tests/chaos

# The image's install steps in a fresh virtual environment, and its entry point on a read-only root.
test-packaging: $(STAMP) build
	@$(LEFTOVERS) -- $(BIN)/python -m localcluster test -- -q tests/packaging

## image: the operator's image from the Dockerfile, on a private Docker engine (root; base image cached by version)
image: $(STAMP)
	@$(BIN)/python -m localcluster image

# The image built and run (non-root, read-only root) against a local cluster; root (apt, dockerd). Not in `test`.
test-image: $(STAMP) build
	@$(LEFTOVERS) -- $(BIN)/python -m localcluster test -- -q tests/image

.PHONY: ray-image test-kind

## ray-image: the kind tier's Ray image (hack/ray-image, ray[default] on the local base) and its Redis image (root)
ray-image: $(STAMP)
	@$(BIN)/python -m localcluster ray-image

## test-kind: Ray in containers under kind's kubelet: node/Ray/Redis/operator images (cached by version), one kind cluster (flannel, a CPU and a GPU worker), the chart, tests/kind (root)
test-kind: $(STAMP) build
	@$(BIN)/python -m localcluster kind-images
	@$(LEFTOVERS) -- $(BIN)/pytest -q -s --durations=0 tests/kind

## kind-e2e: the e2e tier on kind, everything made here (kind, node image, operator image; root); KIND_E2E_ARGS=…
kind-e2e: $(STAMP) build
	@$(BIN)/python -m localcluster kind-e2e -- $(KIND_E2E_ARGS)

lint: $(STAMP)
	@$(BIN)/ruff check operator localcluster tests bench hack
	@$(BIN)/mypy
	@$(BIN)/mypy --explicit-package-bases bench
	@$(BIN)/mypy --explicit-package-bases tests/unit/operator_fixtures.py  # the fake satisfies kube.Kube

## generate: the chart's CRD copy, manifests/install.yaml, docs/crd-reference.md, the Grafana dashboard
generate: $(STAMP)
	@$(BIN)/python -m hack.generate

# Both run; either exits 1 on a missed target (the autoscaler's quick form, ~25 s, and reconcile.py), and so
# does make, after both.
bench: $(STAMP) build
	@status=0; \
	$(BIN)/python bench/autoscaler.py --quick || status=1; \
	$(BIN)/python -m localcluster run -- $(BIN)/python bench/reconcile.py || status=1; \
	exit $$status

## bench-scale: 250 and 1,000 clusters, ours and KubeRay's (built on first use) in alternating pairs, plus a baseline; SCALE_ARGS="--sizes 100 --pairs 1"
bench-scale: $(STAMP) build
	@$(BIN)/python -m localcluster run -- $(BIN)/python bench/scale.py $(SCALE_ARGS)

## bench-autoscale-real: workloads on real Ray (process nodes, root), ours against KubeRay's autoscaler in alternating rounds; not in CI (hours on 2 cores); AUTOSCALE_REAL_ARGS="--workloads burst --pairs 3"
bench-autoscale-real: $(STAMP) build
	@$(BIN)/python -m localcluster run -- $(BIN)/python bench/autoscale_real.py $(AUTOSCALE_REAL_ARGS)

## bench-jobs-real: 20 short jobs, 4 at a time, on real Ray (process nodes, root): SwarmJob against KubeRay's RayJob in alternating rounds; not in CI; JOBS_REAL_ARGS="--jobs 8 --concurrency 2 --pairs 1"
bench-jobs-real: $(STAMP) build
	@$(BIN)/python -m localcluster run -- $(BIN)/python bench/jobs_real.py $(JOBS_REAL_ARGS)

## bench-recovery: worker and head failures and spot reclaims on fake nodes, time to recover; RECOVERY_ARGS=…
bench-recovery: $(STAMP) build
	@$(BIN)/python -m localcluster run -- $(BIN)/python bench/recovery.py $(RECOVERY_ARGS)

## bench-recovery-kind: 100 announced reclaims of a busy worker under kind's kubelet (its preStop), operator defaults, 3 lanes: ~30 min (root; the kind tier's images first); RECOVERY_KIND_ARGS="--real-reclaims 6 --json out.json"
bench-recovery-kind: $(STAMP) build
	@$(BIN)/python -m localcluster kind-images
	@$(BIN)/python bench/recovery.py --kind --real-reclaims 100 $(RECOVERY_KIND_ARGS)

## build: the control plane from Go modules (cached by version)
build: $(STAMP)
	@$(BIN)/python -m localcluster build

# Kueue's controller manager, for the tests of queued SwarmJobs (optional for everything else; cached by version).
build-kueue: $(STAMP)
	@$(BIN)/python -m localcluster build kueue

cluster-up: build
	@$(BIN)/python -m localcluster up

cluster-down: $(STAMP)
	@$(BIN)/python -m localcluster down

clean: cluster-down
	rm -rf $(VENV) $(VENV).lock build dist *.egg-info
