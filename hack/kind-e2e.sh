#!/usr/bin/env bash
# The end-to-end tier on kind, for anyone with Docker: real pods from real images.
#
#   hack/kind-e2e.sh [pytest args…]        e.g. hack/kind-e2e.sh -k autoscaling -x
#
# 1. creates a kind cluster (or reuses one of that name),
# 2. builds the operator image from the Dockerfile and loads it into the cluster's nodes,
# 3. installs the operator with Helm (the CRD from the chart, applied server-side so re-runs upgrade it),
# 4. runs tests/e2e against the cluster: SWARM_TEST_KUBECONFIG names it, and SWARM_TEST_OPERATOR=in-cluster
#    says an operator already serves every namespace, so the tier must not start one of its own.
# The cluster is deleted at the end unless KEEP_CLUSTER=1 (then `kind delete cluster --name …` yourself).
#
# Needs: docker (with a running engine), kind, kubectl, helm (v3.8+), and Python ≥ 3.11 (`make` sets up .venv,
# unless PYTHON names one that has the dev dependencies).
# tests/unit/test_packaging.py keeps it shellcheck-clean and checks its flow with stub tools.
#
# Settings (environment):
#   CLUSTER_NAME      kind cluster name                       (default: swarm-e2e)
#   KIND_NODE_IMAGE   kindest/node image, i.e. the Kubernetes version (default: kind's own default)
#   KIND_CONFIG       a kind cluster config file                (default: none)
#   IMAGE             image reference to build and load       (default: swarm-operator:e2e)
#   KEEP_CLUSTER      1 keeps the cluster afterwards          (default: 0)
#   HELM_EXTRA_ARGS   more `helm upgrade --install` arguments, word-split (e.g. "--set replicaCount=2")
#   DOCKER_BUILD_EXTRA_ARGS  more `docker build` arguments, word-split (e.g. "--build-arg PYTHON_IMAGE=…")
#   PYTHON            the Python that runs the tier           (default: .venv/bin/python, made by `make` if missing;
#                     set, the checkout's .venv is neither made nor used)
#
# `make kind-e2e` runs this with everything built on the machine itself (localcluster/kind.py).
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)

cluster=${CLUSTER_NAME:-swarm-e2e}
image=${IMAGE:-swarm-operator:e2e}
keep=${KEEP_CLUSTER:-0}
release=swarm-operator
namespace=swarm-operator
workdir=$(mktemp -d)
kubeconfig="$workdir/kubeconfig"

log() { printf '[kind-e2e] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || die "$tool is not on PATH"
done
docker info >/dev/null 2>&1 || die "the Docker engine is not reachable (docker info failed)"

python=${PYTHON:-}
if [[ -z $python ]]; then
  python=$repo/.venv/bin/python
  log "setting up .venv if needed (make)"
  make -C "$repo" .venv/.installed
fi

cleanup() {
  local status=$?
  if ((status != 0)) && [[ -s $kubeconfig ]]; then
    log "failed ($status); the operator's last logs:"
    kubectl --kubeconfig "$kubeconfig" -n "$namespace" logs "deployment/$release" --tail=100 >&2 || true
  fi
  if [[ $keep == 1 ]]; then
    log "keeping cluster $cluster (kubeconfig: kind get kubeconfig --name $cluster)"
  else
    log "deleting cluster $cluster"
    kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
  fi
  rm -rf "$workdir"
  exit "$status"
}
trap cleanup EXIT

# -- 1. the cluster -------------------------------------------------------------------------------
if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  log "reusing kind cluster $cluster"
else
  log "creating kind cluster $cluster"
  create=(kind create cluster --name "$cluster" --wait 180s)
  if [[ -n ${KIND_NODE_IMAGE:-} ]]; then
    create+=(--image "$KIND_NODE_IMAGE")
  fi
  if [[ -n ${KIND_CONFIG:-} ]]; then
    create+=(--config "$KIND_CONFIG")
  fi
  "${create[@]}"
fi
kind get kubeconfig --name "$cluster" >"$kubeconfig"
k() { kubectl --kubeconfig "$kubeconfig" "$@"; }

# -- 2. the image ---------------------------------------------------------------------------------
version=$("$python" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
log "building $image (version $version, revision $revision)"
read -r -a build_extra <<<"${DOCKER_BUILD_EXTRA_ARGS:-}"
docker build --tag "$image" --build-arg "VERSION=$version" --build-arg "REVISION=$revision" "${build_extra[@]}" "$repo"
kind load docker-image "$image" --name "$cluster"

# -- 3. the operator ------------------------------------------------------------------------------
log "applying the CRD and installing the chart"
k apply --server-side --force-conflicts --field-manager=kind-e2e -f "$repo/crds/swarmcluster.yaml"
k wait --for=condition=Established --timeout=60s crd/swarmclusters.swarm.io
repository=${image%:*}
tag=${image##*:}
read -r -a helm_extra <<<"${HELM_EXTRA_ARGS:-}"
helm --kubeconfig "$kubeconfig" upgrade --install "$release" "$repo/helm/swarm-operator" \
  --namespace "$namespace" --create-namespace --skip-crds \
  --set "image.repository=$repository" --set "image.tag=$tag" --set image.pullPolicy=Never \
  --wait --timeout 5m "${helm_extra[@]}"
k -n "$namespace" rollout status "deployment/$release" --timeout=120s

# -- 4. the end-to-end tier -----------------------------------------------------------------------
log "running tests/e2e $*"
SWARM_TEST_KUBECONFIG=$kubeconfig SWARM_TEST_OPERATOR=in-cluster \
  "$python" -m pytest tests/e2e "$@"
