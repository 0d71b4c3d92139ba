"""Hostile SwarmCluster input: absurd sizes, unicode and over-long names, huge templates, odd but legal
values, and status garbage written by someone else. Shared by tests/unit/test_hostile_cases.py (the
operator's parser, the local schema) and tests/integration/test_hostile_input.py (the real API server and
the running operator).

- `HOSTILE_CASES` are `InvalidCase`s of the shared corpus (tests/cases/invalid_manifests.py): the same
  fields, the same meaning; each is also rejected by `spec.parse_cluster` naming `field`.
- `SERVER_ONLY_CASES` break the object, not the spec (its metadata, unknown fields): only the API server
  can refuse them; the operator never sees them.
- `ODDITIES` are strange but valid: the API server accepts them and the operator must serve them.
- `STATUS_GARBAGE` are status subresource patches by a client that is not the operator.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from tests.cases.invalid_manifests import DELETE, InvalidCase, Layer, base_manifest, mutated

W0 = "spec.workerGroups[0]"  # the CPU group of base_manifest(): replicas 2 within [0, 4]
W1 = "spec.workerGroups[1]"  # the GPU group: no replicas, [0, 4], one GPU
HEAD = "spec.head"
AS = "spec.autoscaling"
T0 = f"{W0}.template"
KiB, MiB = 2**10, 2**20
ANNOTATIONS_LIMIT = 256 * KiB  # Kubernetes' total size of an object's annotations (keys + values)
RAY_MAX_QUANTITY = 10**14  # ray_constants.MAX_RESOURCE_QUANTITY: `ray start` refuses more of any resource


def _case(id: str, changes: Mapping[str, Any], field: str, api_field: str | None, layer: Layer) -> InvalidCase:
    return InvalidCase(id=id, manifest=mutated(changes), field=field, api_field=api_field, rejected_by=layer)


def _env(n: int, bad_at: int | None = None) -> list[dict[str, str]]:
    return [{"name": "A=B" if i == bad_at else f"VAR_{i}", "value": f"value-{i}"} for i in range(n)]


def _groups(n: int, same: bool = False) -> list[dict[str, Any]]:
    return [{"name": "g" if same else f"g{i}", "maxReplicas": 1} for i in range(n)]


HOSTILE_CASES: tuple[InvalidCase, ...] = (
    # --- absurd sizes -------------------------------------------------------------------------------
    _case("hostile-head-cpu-1e30", {f"{HEAD}.resources.cpu": "1e30"},
          f"{HEAD}.resources.cpu", f"{HEAD}.resources.cpu", "cel"),
    _case("hostile-worker-memory-999999999ti", {f"{W0}.resources.memory": "999999999Ti"},
          f"{W0}.resources.memory", f"{W0}.resources.memory", "cel"),
    # Fits in Kubernetes' int64, not in Ray: `ray start` refuses more than 1e14 of any resource.
    _case("hostile-worker-memory-above-ray-max", {f"{W0}.resources.memory": "100Ti"},
          f"{W0}.resources.memory", f"{W0}.resources.memory", "cel"),
    _case("hostile-head-memory-int-above-ray-max", {f"{HEAD}.resources.memory": RAY_MAX_QUANTITY + 1},
          f"{HEAD}.resources.memory", f"{HEAD}.resources.memory", "cel"),
    _case("hostile-worker-cpu-1e15-cores", {f"{W1}.resources.cpu": "1e15"},
          f"{W1}.resources.cpu", f"{W1}.resources.cpu", "cel"),
    _case("hostile-replicas-2-pow-31", {f"{W0}.replicas": 2**31}, f"{W0}.replicas", f"{W0}.replicas", "schema"),
    _case("hostile-replicas-2-pow-63", {f"{W0}.replicas": 2**63}, f"{W0}.replicas", f"{W0}.replicas", "schema"),
    _case("hostile-max-replicas-2-pow-64", {f"{W1}.maxReplicas": 2**64},
          f"{W1}.maxReplicas", f"{W1}.maxReplicas", "schema"),
    _case("hostile-min-replicas-minus-2-pow-31", {f"{W1}.minReplicas": -(2**31)},
          f"{W1}.minReplicas", f"{W1}.minReplicas", "schema"),
    _case("hostile-gpu-2-pow-31", {f"{W1}.resources.gpu": 2**31},
          f"{W1}.resources.gpu", f"{W1}.resources.gpu", "schema"),
    _case("hostile-gpu-negative-fraction", {f"{W1}.resources.gpu": -0.5},
          f"{W1}.resources.gpu", f"{W1}.resources.gpu", "schema"),
    _case("hostile-head-gpu-one-and-a-half", {f"{HEAD}.resources.gpu": 1.5},
          f"{HEAD}.resources.gpu", f"{HEAD}.resources.gpu", "schema"),
    _case("hostile-head-gpu-negative", {f"{HEAD}.resources.gpu": -4},
          f"{HEAD}.resources.gpu", f"{HEAD}.resources.gpu", "schema"),
    # Ray's node resources are whole numbers (ray start: "Resource quantities must all be whole numbers").
    _case("hostile-ray-resources-fractional", {f"{W1}.rayResources": {"TPU": 0.5}},
          f"{W1}.rayResources.TPU", f"{W1}.rayResources.TPU", "schema"),
    _case("hostile-ray-resources-1e300", {f"{W1}.rayResources": {"TPU": 1e300}},
          f"{W1}.rayResources.TPU", f"{W1}.rayResources.TPU", "schema"),
    _case("hostile-object-store-memory-above-ray-max",
          {f"{HEAD}.rayStartParams": {"object-store-memory": "999999999999999999999"}},
          f"{HEAD}.rayStartParams.object-store-memory", None, "operator"),
    # Fullwidth digits are digits to Python's str.isdigit() and int(), not to Ray.
    _case("hostile-object-store-memory-fullwidth-digits", {f"{W0}.rayStartParams": {"object-store-memory": "１２３"}},
          f"{W0}.rayStartParams.object-store-memory", None, "operator"),
    _case("hostile-interval-1e308", {f"{AS}.intervalSeconds": 1e308},
          f"{AS}.intervalSeconds", f"{AS}.intervalSeconds", "schema"),
    _case("hostile-idle-timeout-2-pow-63", {f"{AS}.idleTimeoutSeconds": 2**63},
          f"{AS}.idleTimeoutSeconds", f"{AS}.idleTimeoutSeconds", "schema"),
    _case("hostile-upscaling-speed-tiny", {f"{AS}.upscalingSpeed": 1e-300},
          f"{AS}.upscalingSpeed", f"{AS}.upscalingSpeed", "schema"),
    _case("hostile-ray-start-param-value-5000-chars", {f"{W0}.rayStartParams": {"temp-dir": "/" + "t" * 4999}},
          f"{W0}.rayStartParams.temp-dir", f"{W0}.rayStartParams.temp-dir", "schema"),
    _case("hostile-ray-start-params-65-keys", {f"{HEAD}.rayStartParams": {f"flag-{i}": "" for i in range(65)}},
          f"{HEAD}.rayStartParams", f"{HEAD}.rayStartParams", "schema"),
    _case("hostile-1000-worker-groups", {"spec.workerGroups": _groups(1000)},
          "spec.workerGroups", "spec.workerGroups", "schema"),
    # --- unicode and over-long names ---------------------------------------------------------------------
    _case("hostile-cluster-name-umlaut", {"metadata.name": "ümlaut"}, "metadata.name", "metadata.name", "apiserver"),
    _case("hostile-cluster-name-emoji", {"metadata.name": "ray-🚀"}, "metadata.name", "metadata.name", "apiserver"),
    # A legal object name (a DNS subdomain of at most 253), far too long for the names derived from it.
    _case("hostile-cluster-name-253-chars", {"metadata.name": "a" * 253, "spec.workerGroups": DELETE},
          "metadata.name", "metadata.name", "cel"),
    _case("hostile-cluster-name-254-chars", {"metadata.name": "a" * 254, "spec.workerGroups": DELETE},
          "metadata.name", "metadata.name", "apiserver"),
    _case("hostile-group-name-umlaut", {f"{W0}.name": "grüppe"}, f"{W0}.name", f"{W0}.name", "schema"),
    # Cyrillic "с" and "р": looks like "cpu".
    _case("hostile-group-name-homoglyph", {f"{W1}.name": "срu"}, f"{W1}.name", f"{W1}.name", "schema"),
    _case("hostile-group-name-zero-width-space", {f"{W0}.name": "cpu\u200b"}, f"{W0}.name", f"{W0}.name", "schema"),
    _case("hostile-group-name-right-to-left-override", {f"{W1}.name": "\u202egpu"}, f"{W1}.name", f"{W1}.name",
          "schema"),
    _case("hostile-group-name-nul", {f"{W0}.name": "cpu\u0000"}, f"{W0}.name", f"{W0}.name", "schema"),
    _case("hostile-group-name-1000-chars", {f"{W0}.name": "g" * 1000}, f"{W0}.name", f"{W0}.name", "schema"),
    _case("hostile-ray-start-param-key-unicode", {f"{HEAD}.rayStartParams": {"tëmp-dir": "/tmp"}},
          f"{HEAD}.rayStartParams.tëmp-dir", f"{HEAD}.rayStartParams", "cel"),
    _case("hostile-image-unicode", {"spec.image": "räy:latest"}, "spec.image", "spec.image", "schema"),
    _case("hostile-image-newline", {"spec.image": "rayproject/ray\n:latest"}, "spec.image", "spec.image", "schema"),
    # The pod API refuses an image with surrounding whitespace: every create would fail.
    _case("hostile-image-trailing-space", {"spec.image": "rayproject/ray:2.60.0 "}, "spec.image", "spec.image",
          "schema"),
    _case("hostile-image-over-512-chars", {"spec.image": "r" * 513}, "spec.image", "spec.image", "schema"),
    # --- GPU resource names that are not extended resources -----------------------------------------------
    # As limits these would replace the pod's own cpu/memory limit, or be refused ("gpu" is not qualified).
    _case("hostile-gpu-resource-name-cpu", {f"{W1}.resources.gpuResourceName": "cpu"},
          f"{W1}.resources.gpuResourceName", f"{W1}.resources.gpuResourceName", "schema"),
    _case("hostile-gpu-resource-name-memory", {f"{W1}.resources.gpuResourceName": "memory"},
          f"{W1}.resources.gpuResourceName", f"{W1}.resources.gpuResourceName", "schema"),
    _case("hostile-gpu-resource-name-unqualified", {f"{W1}.resources.gpuResourceName": "gpu"},
          f"{W1}.resources.gpuResourceName", f"{W1}.resources.gpuResourceName", "schema"),
    _case("hostile-gpu-resource-name-unicode", {f"{W1}.resources.gpuResourceName": "nvidiä.com/gpu"},
          f"{W1}.resources.gpuResourceName", f"{W1}.resources.gpuResourceName", "schema"),
    # --- duplicate worker groups --------------------------------------------------------------------------
    _case("hostile-duplicate-group-whole-copy", {W1: base_manifest()["spec"]["workerGroups"][0]}, f"{W1}.name", W1,
          "apiserver"),
    _case("hostile-sixteen-identical-groups", {"spec.workerGroups": _groups(16, same=True)},
          "spec.workerGroups", "spec.workerGroups[1]", "apiserver"),
    # --- pod templates the pod API would refuse (the CRD cannot look inside them; the operator does) ------
    _case("hostile-template-label-value-space", {f"{T0}.metadata.labels": {"team": "ray team"}},
          f"{T0}.metadata.labels.team", None, "operator"),
    _case("hostile-template-label-value-64-chars", {f"{T0}.metadata.labels": {"team": "x" * 64}},
          f"{T0}.metadata.labels.team", None, "operator"),
    _case("hostile-template-label-key-unicode", {f"{T0}.metadata.labels": {"équipe": "ray"}},
          f"{T0}.metadata.labels.équipe", None, "operator"),
    _case("hostile-template-annotation-key-space", {f"{HEAD}.template.metadata.annotations": {"my note": "x"}},
          f"{HEAD}.template.metadata.annotations.my note", None, "operator"),
    _case("hostile-template-annotation-1mib", {f"{T0}.metadata.annotations": {"blob": "x" * MiB}},
          f"{T0}.metadata.annotations", None, "operator"),
    _case("hostile-template-annotations-over-256kib-together",
          {f"{T0}.metadata.annotations": {"a": "x" * (ANNOTATIONS_LIMIT // 2), "b": "y" * (ANNOTATIONS_LIMIT // 2)}},
          f"{T0}.metadata.annotations", None, "operator"),
    _case("hostile-template-node-selector-key-space", {f"{T0}.spec.nodeSelector": {"node pool": "a"}},
          f"{T0}.spec.nodeSelector.node pool", None, "operator"),
    _case("hostile-template-node-selector-value-slash", {f"{T0}.spec.nodeSelector": {"pool": "a/b"}},
          f"{T0}.spec.nodeSelector.pool", None, "operator"),
    _case("hostile-template-env-name-equals", {f"{T0}.spec.containers": [{"name": "ray", "env": _env(1, bad_at=0)}]},
          f"{T0}.spec.containers[0].env[0].name", None, "operator"),
    _case("hostile-template-env-name-empty",
          {f"{T0}.spec.containers": [{"name": "ray", "env": [{"name": "", "value": "1"}]}]},
          f"{T0}.spec.containers[0].env[0].name", None, "operator"),
    # A huge template: 5,000 variables, the last one broken; the error must name exactly that one.
    _case("hostile-template-5000-env-last-bad",
          {f"{T0}.spec.containers": [{"name": "ray", "env": _env(5000, bad_at=4999)}]},
          f"{T0}.spec.containers[0].env[4999].name", None, "operator"),
    _case("hostile-template-container-port-string",
          {f"{T0}.spec.containers": [{"name": "ray", "ports": [{"containerPort": "8081"}]}]},
          f"{T0}.spec.containers[0].ports[0].containerPort", None, "operator"),
    _case("hostile-template-container-port-70000",
          {f"{T0}.spec.containers": [{"name": "ray", "ports": [{"containerPort": 70000}]}]},
          f"{T0}.spec.containers[0].ports[0].containerPort", None, "operator"),
    _case("hostile-template-sidecar-without-image",
          {f"{T0}.spec.containers": [{"name": "ray"}, {"name": "logs"}]},
          f"{T0}.spec.containers[1].image", None, "operator"),
)

# Not one of them may be a plain copy of the valid base.
assert all(c.manifest != base_manifest() for c in HOSTILE_CASES)


@dataclasses.dataclass(frozen=True)
class ServerOnlyCase:
    """Broken object metadata or unknown fields: the API server refuses it before any schema or operator."""

    id: str
    manifest: dict[str, Any] = dataclasses.field(hash=False, compare=False, repr=False)
    api_field: str = ""


SERVER_ONLY_CASES: tuple[ServerOnlyCase, ...] = (
    ServerOnlyCase("object-annotation-1mib", mutated({"metadata.annotations": {"blob": "x" * MiB}}),
                   "metadata.annotations"),
    ServerOnlyCase("object-label-value-unicode", mutated({"metadata.labels": {"team": "équipe"}}), "metadata.labels"),
    ServerOnlyCase("object-finalizer-not-a-name", mutated({"metadata.finalizers": ["not a finalizer!"]}),
                   "metadata.finalizers"),
    # Strict field validation, as `kubectl apply` does by default.
    ServerOnlyCase("unknown-spec-field", mutated({"spec.replicas": 3}), "spec.replicas"),
    ServerOnlyCase("unknown-group-field", mutated({f"{W0}.gpus": 2}), f"{W0}.gpus"),
)


@dataclasses.dataclass(frozen=True)
class Oddity:
    """Strange but valid: accepted by the API server, served by the operator like any other cluster."""

    id: str
    manifest: dict[str, Any] = dataclasses.field(hash=False, compare=False, repr=False)
    why: str = ""
    warnings: tuple[str, ...] = ()  # Warning Event reasons expected: a documented precedence, reported


def _odd(id: str, changes: Mapping[str, Any], why: str, warnings: tuple[str, ...] = ()) -> Oddity:
    return Oddity(id=id, manifest=mutated(changes), why=why, warnings=warnings)


ODDITIES: tuple[Oddity, ...] = (
    _odd("cpu-one-nanocore", {f"{W0}.resources.cpu": "1n"}, "the smallest positive quantity"),
    _odd("cpu-1e-10", {f"{W0}.resources.cpu": "1e-10"}, "below a nanocore: Kubernetes rounds up"),
    _odd("memory-exponent", {f"{W0}.resources.memory": "1.5e9"}, "a decimal exponent"),
    _odd("cpu-at-ray-max", {f"{W1}.resources.cpu": "100T", f"{W1}.minReplicas": 1},
         "exactly Ray's limit: legal, unschedulable (the pod stays Pending)"),
    _odd("gpu-integral-float", {f"{W1}.resources.gpu": 1.0, f"{W1}.minReplicas": 1},
         "1.0 is an integer to the API server (stored as 1)"),
    _odd("ray-resources-unicode-key", {f"{W0}.rayResources": {"加速器": 2, "accelerator_type:A100": 1}},
         "any Ray resource name"),
    _odd("ray-resources-at-ray-max", {f"{W0}.rayResources": {"tokens": RAY_MAX_QUANTITY}}, "exactly Ray's limit"),
    _odd("ray-start-param-shell-metacharacters", {f"{HEAD}.rayStartParams": {"temp-dir": "/tmp/$(reboot); rm -rf /"}},
         "args are an argv, never a shell line"),
    _odd("ray-start-param-newline", {f"{W0}.rayStartParams": {"temp-dir": "/tmp\n--head"}},
         "one argv element, not a second flag"),
    _odd("template-5000-env-vars", {f"{T0}.spec.containers": [{"name": "ray", "env": _env(5000)}]},
         "a huge template (~150 KB) in every worker pod"),
    _odd("template-annotations-just-under-the-limit",
         {f"{T0}.metadata.annotations": {"blob": "x" * (ANNOTATIONS_LIMIT - 64 * KiB)}},
         "192 KiB of annotations: under Kubernetes' 256 KiB"),
    _odd("template-steals-operator-labels",
         {f"{T0}.metadata.labels": {"swarm.io/cluster": "neighbour", "swarm.io/group": "gpu",
                                    "swarm.io/node-type": "head"}},
         "the operator's own labels win: the pods still belong to this cluster and group",
         warnings=("TemplateOverridden",)),
    _odd("template-unicode-annotation-value", {f"{HEAD}.template.metadata.annotations": {"note": "日本語 🚀 \u202e"}},
         "annotation values are free text"),
    _odd("spec-nulls", {"spec.workerGroups[0].rayStartParams": None, "spec.autoscaling": None,
                        f"{HEAD}.template": None},
         "null for a defaulted or optional field is dropped by the API server"),
    _odd("create-with-status", {"status": {"phase": "Invalid", "workerGroups": [{"name": "ghost",
                                                                             "desiredReplicas": 500}]}},
         "status on create is dropped (status subresource)"),
    _odd("no-worker-groups", {"spec.workerGroups": DELETE}, "a head alone"),
    _odd("sixteen-groups", {"spec.workerGroups": _groups(16)}, "the most groups allowed, all at zero"),
    _odd("longest-names", {"metadata.name": "a" * 26, "spec.workerGroups": [{"name": "g" * 30, "replicas": 1}]},
         "cluster + group name exactly 56 characters: the worker pod name is 63"),
)


@dataclasses.dataclass(frozen=True)
class StatusGarbage:
    """A status patch by someone other than the operator (merge patch on the status subresource)."""

    id: str
    status: dict[str, Any] = dataclasses.field(hash=False, compare=False, repr=False)
    api_field: str | None = None  # refused by the API server naming this; None: accepted (the operator repairs it)


STATUS_GARBAGE: tuple[StatusGarbage, ...] = (
    # Accepted by the schema: the operator must write the truth back and keep serving.
    StatusGarbage("phase-invalid", {"phase": "Invalid"}),
    StatusGarbage("phase-degraded", {"phase": "Degraded", "workers": "0/999", "readyWorkers": 0}),
    StatusGarbage("conditions-junk", {"conditions": [
        {"type": "Valid", "status": "False", "reason": "Hacked", "message": "x" * 100_000},
        {"type": "Ünïcode 💥", "status": "Unknown"}]}),
    StatusGarbage("ghost-group", {"workerGroups": [{"name": "ghost", "desiredReplicas": 500, "restarts": 7}]}),
    StatusGarbage("group-counters-absurd", {"workerGroups": [
        {"name": "cpu", "desiredReplicas": 2**62, "currentReplicas": 2**62, "readyReplicas": 2**62}]}),
    StatusGarbage("observed-generation-future", {"observedGeneration": 2**62}),
    StatusGarbage("head-junk", {"head": {"podName": "someone-else", "ready": False, "restarts": 99}}),
    StatusGarbage("last-failure-long-ago", {"workerGroups": [
        {"name": "cpu", "lastFailureTime": "1970-01-01T00:00:01Z", "consecutiveFailures": 40}]}),
    StatusGarbage("nanosecond-time", {"workerGroups": [
        {"name": "cpu", "lastFailureTime": "2024-01-01T00:00:00.123456789+05:30"}]}),
    StatusGarbage("autoscaler-junk", {"autoscaler": {"lastDecision": "🚀" * 1000, "pendingDemand": ""}}),
    StatusGarbage("unknown-status-field", {"hacked": {"by": "someone"}}),
    # Refused by the API server.
    StatusGarbage("phase-unknown", {"phase": "Exploded"}, "status.phase"),
    StatusGarbage("phase-number", {"phase": 5}, "status.phase"),
    StatusGarbage("condition-status-maybe", {"conditions": [{"type": "Valid", "status": "Maybe"}]},
                  "status.conditions[0].status"),
    StatusGarbage("condition-without-status", {"conditions": [{"type": "Valid"}]}, "status.conditions[0].status"),
    StatusGarbage("conditions-duplicate", {"conditions": [{"type": "Valid", "status": "True"},
                                                          {"type": "Valid", "status": "False"}]},
                  "status.conditions[1]"),
    StatusGarbage("desired-replicas-string", {"workerGroups": [{"name": "cpu", "desiredReplicas": "5"}]},
                  "status.workerGroups[0].desiredReplicas"),
    StatusGarbage("desired-replicas-fraction", {"workerGroups": [{"name": "cpu", "desiredReplicas": 2.5}]},
                  "status.workerGroups[0].desiredReplicas"),
    StatusGarbage("group-without-name", {"workerGroups": [{"desiredReplicas": 1}]}, "status.workerGroups[0].name"),
    StatusGarbage("time-not-a-time", {"workerGroups": [{"name": "cpu", "lastFailureTime": "yesterday"}]},
                  "status.workerGroups[0].lastFailureTime"),
    # RFC 3339 allows lower-case "t" and "z"; Python's datetime.fromisoformat does not: the operator would
    # fail on every turn of this cluster, so the CRD refuses them.
    StatusGarbage("time-lower-case", {"workerGroups": [{"name": "cpu", "lastFailureTime": "2024-01-01t00:00:00z"}]},
                  "status.workerGroups[0].lastFailureTime"),
    StatusGarbage("backoff-lower-case", {"workerGroups": [{"name": "cpu", "backoffUntil": "2024-01-01t00:00:00z"}]},
                  "status.workerGroups[0].backoffUntil"),
    # The operator writes year 1 back as "1-01-01T00:00:00Z" (strftime does not pad the year), which the API
    # server refuses: every status write of the cluster failed. Year 9999 with an offset is year 10000 in UTC:
    # Python's datetime cannot hold it, so every turn of the cluster failed. The CRD takes years 1970-2999.
    StatusGarbage("time-year-1", {"workerGroups": [{"name": "cpu", "lastFailureTime": "0001-01-01T00:00:00Z"}]},
                  "status.workerGroups[0].lastFailureTime"),
    StatusGarbage("time-year-9999-with-offset",
                  {"workerGroups": [{"name": "cpu", "backoffUntil": "9999-12-31T23:59:59-01:00"}]},
                  "status.workerGroups[0].backoffUntil"),
    StatusGarbage("scale-up-time-junk", {"autoscaler": {"lastScaleUpTime": {"cpu": "yesterday"}}},
                  "status.autoscaler.lastScaleUpTime.cpu"),
    # Negative failure counts would switch the replacement backoff off (2^-n).
    StatusGarbage("consecutive-failures-negative", {"workerGroups": [{"name": "cpu", "consecutiveFailures": -1000}]},
                  "status.workerGroups[0].consecutiveFailures"),
    StatusGarbage("ready-workers-negative", {"readyWorkers": -3}, "status.readyWorkers"),
    StatusGarbage("restarts-negative", {"head": {"restarts": -1}}, "status.head.restarts"),
)
